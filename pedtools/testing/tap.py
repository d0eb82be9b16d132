"""Byte taps: TCP and Unix proxies that record every byte they relay, both ways.

A tap stands between two programs (an HSM and pedclient, pedclient and pedserver,
pedserver and its PED) so that a test, or the demo, can search everything a relay sent
and received for what must never be there.  `tcp_tap` and `unix_tap` start one in a
trio nursery; `Tap.up` holds what went towards the target, `Tap.down` what came back.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

Connect = Callable[[], Awaitable[trio.abc.Stream]]


@attrs.define
class Tap:
    """Records every byte a proxy relays: ``up`` (towards the target), ``down`` (back).

    Each direction passes its end of stream on (a half-close), so a connection is over
    once both ends have finished sending: `wait_ended` waits for that, and then every
    byte either end sent has been recorded.
    """

    up: bytearray = attrs.field(factory=bytearray)
    down: bytearray = attrs.field(factory=bytearray)
    connections: int = 0
    ended: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    async def _pipe(self, src: trio.abc.Stream, dst: trio.abc.Stream, record: bytearray) -> None:
        try:
            while data := await src.receive_some(65536):
                record += data
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError):
                if isinstance(dst, trio.abc.HalfCloseableStream):
                    await dst.send_eof()  # the other direction runs on to its own end
                else:
                    await dst.aclose()

    async def handle(self, client: trio.abc.Stream, connect: Connect) -> None:
        self.connections += 1
        try:
            try:
                target = await connect()
            except OSError:
                await client.aclose()
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pipe, client, target, self.up)
                nursery.start_soon(self._pipe, target, client, self.down)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await target.aclose()
                await client.aclose()
        finally:
            self.ended += 1
            self._changed.set()
            self._changed = trio.Event()

    async def wait_ended(self, timeout: float = 30.0) -> None:
        """Return once every connection the tap took has ended both ways."""
        with trio.fail_after(timeout):
            while self.ended < self.connections or not self.connections:
                await self._changed.wait()


async def tcp_tap(nursery: trio.Nursery, target_port: int) -> tuple[Tap, int]:
    """A tap on a free loopback port in front of 127.0.0.1:*target_port*; (tap, port)."""
    tap = Tap()

    async def connect() -> trio.abc.Stream:
        return await trio.open_tcp_stream("127.0.0.1", target_port)

    async def handler(stream: trio.SocketStream) -> None:
        await tap.handle(stream, connect)

    listeners: list[trio.SocketListener] = await nursery.start(
        functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
    )
    return tap, int(listeners[0].socket.getsockname()[1])


async def unix_tap(nursery: trio.Nursery, path: Path, target: Path) -> Tap:
    """A tap listening on the Unix socket *path* in front of the one at *target*."""
    tap = Tap()

    async def connect() -> trio.abc.Stream:
        return await trio.open_unix_socket(str(target))

    async def handler(stream: trio.SocketStream) -> None:
        await tap.handle(stream, connect)

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(16)
    nursery.start_soon(trio.serve_listeners, handler, [trio.SocketListener(sock)])
    return tap
