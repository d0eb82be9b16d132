"""A route that can be held: a TCP proxy that keeps bytes back while TCP stays alive.

What a route flap looks like to pedclient and pedserver: both connections stay open,
nothing is reset, and the bytes sent meanwhile simply do not arrive until the route
comes back.  `HeldRoute.hold` stops one direction ("up": towards the target, "down":
back) or both; bytes that reach the route meanwhile wait in it (`waiting`), and
`release` lets them through in order.  Tests wait for `wait_for_waiting` (bytes are
stuck in the route), never for a fixed time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import trio

UP, DOWN = "up", "down"


class HeldRoute:
    """A loopback TCP proxy in front of 127.0.0.1:*target_port* that can hold bytes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.waiting = {UP: 0, DOWN: 0}  # bytes kept back, per direction
        self._open = {UP: trio.Event(), DOWN: trio.Event()}
        for event in self._open.values():
            event.set()
        self._changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> int:
        """Listen on a free loopback port; its number."""
        listeners: list[trio.SocketListener] = await nursery.start(
            functools.partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
        )
        self.port = int(listeners[0].socket.getsockname()[1])
        return self.port

    def hold(self, *directions: str) -> None:
        """Keep back every byte that comes in *directions* (both by default)."""
        for direction in directions or (UP, DOWN):
            if self._open[direction].is_set():
                self._open[direction] = trio.Event()

    def release(self, *directions: str) -> None:
        """Let the kept-back bytes through, in order, and every later one."""
        for direction in directions or (UP, DOWN):
            self._open[direction].set()

    async def wait_for_waiting(self, direction: str, timeout: float = 30.0) -> None:
        """Return once some bytes wait in the route in *direction*."""
        await self._wait(lambda: self.waiting[direction] > 0, timeout)

    async def _wait(self, done: Callable[[], bool], timeout: float) -> None:
        with trio.fail_after(timeout):
            while not done():
                await self._changed.wait()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _pipe(self, src: trio.abc.Stream, dst: trio.abc.Stream, direction: str) -> None:
        try:
            while data := await src.receive_some(65536):
                if not self._open[direction].is_set():
                    self.waiting[direction] += len(data)
                    self._note()
                    await self._open[direction].wait()
                    self.waiting[direction] -= len(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError):
                await dst.aclose()

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            target = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, target, UP)
            nursery.start_soon(self._pipe, target, client, DOWN)


async def wait_for_state(
    show: Callable[[], dict[str, object]], check: Callable[[dict[str, object]], bool],
    timeout: float = 30.0,
) -> dict[str, object]:
    """Poll *show* (a daemon's ``mode show`` answer) until its first link passes *check*;
    that link.  A state is waited for, never a fixed time."""
    with trio.fail_after(timeout):
        while True:
            links = show()["links"]
            assert isinstance(links, list)
            if links and check(links[0]):
                return dict(links[0])
            await trio.sleep(0.01)
