"""The remote PED link's life, from ``hsm ped connect`` to its end: `RemoteLink`.

Theory of operation
-------------------
`RemoteLink.open` dials pedclient's socket (`ped.link.connect_via_pedclient`), runs the
RPV handshake (`ped.hsm_api.open_ped_session`) and, once the session is up, hands the
rest of the link's life to a task in the router's nursery: that task holds the session
and watches the transport (`PedclientTransport.wait_closed` reads it between operations)
until one of three things happens:

* the administrator's ``hsm ped disconnect`` (`close`): not a loss;
* this HSM ends it (`end`: the idle timeout, a session an operation left broken), with
  who and why;
* pedserver or pedclient closes it: the transport says who and why.

In the last two cases the link is *lost* and the task tells the router (``on_lost``),
which refuses every PED operation with the cause and the fix until the administrator
reconnects or disconnects (`hsm.linkloss`).  Whatever ends it, the session's keys are
wiped by `open_ped_session` and the transport is closed, shielded from cancellation.

`lock` is held by the router for each operation on the session: a session is unusable
while an operation runs, and the idle timeout does not count while it is held.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from hsm.apiport import first_error, map_error
from hsm.crypto import wipe
from hsm.errors import PedUnavailable
from ped.errors import PedError
from ped.link.errors import LinkEnd

log = logging.getLogger("pedhsm.ped")
#: How long ending or closing a link waits for its task to finish (it closes a socket).
END_WAIT = 10.0
#: pedclient's API needs a valid port even for a peer (PED-initiated) link, which it ignores.
PEER_PORT = 1503


class RemoteLink:
    """The HSM's one remote PED link: its session, address and watcher (see above)."""

    def __init__(
        self,
        *,
        pedclient_socket: str | None,
        serial: Callable[[], str],
        timeouts: Callable[[], dict[str, int]],
        session_args: Callable[[], dict[str, Any]],
        on_open: Callable[[], None],
        on_lost: Callable[[str, LinkEnd], None],
        busy_wait: float,
        now: Callable[[], float],
    ) -> None:
        self.pedclient_socket = pedclient_socket
        self._serial = serial
        self._timeouts = timeouts
        self._session_args = session_args
        self._on_open = on_open
        self._on_lost = on_lost
        self._busy_wait = busy_wait
        self._now = now
        self.session: Any = None  # the open hsm_api session, None when there is no link
        self.address: str | None = None
        self.transport: Any = None
        self.peer = False  # opened by the PED (``hsm ped connect -id``): no idle timeout
        self.since: float | None = None  # wall-clock time the session opened
        self.lock = trio.Lock()  # held for each operation on the session
        self._stop: trio.Event | None = None
        self._done: trio.Event | None = None
        # Why the HSM itself is ending the link (idle timeout, a broken session); None
        # while the only way to end it is the administrator's disconnect.
        self._ending: LinkEnd | None = None
        self._hold_done: trio.Event | None = None  # set when the link task has finished

    def is_open(self) -> bool:
        """The watched truth: a session is held and its transport has not ended."""
        if self.session is None:
            return False
        if getattr(self.transport, "closed_reason", None) is not None:
            return False
        # A session is unusable while its operation runs (the lock is held then), and for
        # good once it broke: then `hsm ped connect` opens a new one.
        return self.lock.locked() or bool(self.session.usable)

    async def open(
        self, nursery: trio.Nursery, host: str, port: int, rpv: bytearray, peer: str | None
    ) -> str:
        """Connect and run the handshake with a copy of *rpv*; the address on success."""
        address = f"peer {peer}" if peer is not None else f"{host}:{port}"
        rpv_copy = bytearray(rpv)
        try:
            await nursery.start(self._hold, host, port, rpv_copy, peer)
        except BaseExceptionGroup as group:
            raise map_error(first_error(group), f"remote PED {address}",
                            waited=self._busy_wait) from None  # fmt: skip
        except PedError as exc:
            if isinstance(exc, PedUnavailable):
                raise
            raise map_error(exc, f"remote PED {address}", waited=self._busy_wait) from None
        return address

    async def _hold(
        self,
        host: str,
        port: int,
        rpv: bytearray,
        peer: str | None,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        from ped.hsm_api import open_ped_session
        from ped.link import connect_via_pedclient

        address = f"peer {peer}" if peer is not None else f"{host}:{port}"
        stop, done = trio.Event(), trio.Event()
        self._hold_done = done
        end: LinkEnd | None = None
        try:
            try:
                transport = await connect_via_pedclient(
                    self.pedclient_socket or "",
                    host if peer is None else None,
                    port if peer is None else PEER_PORT,
                    peer=peer,
                    idle_timeout=self._timeouts()["rped"],
                    hsm_name=f"pedhsm {self._serial()}",
                )
            except PedError as exc:
                raise map_error(exc, f"remote PED {address}") from None
            started = False
            try:
                async with open_ped_session(transport, rpv=rpv, **self._session_args()) as ped:
                    wipe(rpv)
                    self.session, self.address, self.transport = ped, address, transport
                    self.peer = peer is not None
                    self._stop, self._done = stop, done
                    self.since = self._now()
                    self._ending = None
                    self._on_open()
                    task_status.started()
                    started = True
                    end = await self._watch(transport, stop)
            except Exception as exc:
                if not started:
                    raise
                # Closing a link that already died: the HSM carries on without it.
                log.info("remote PED %s: closed with %s", address, type(exc).__name__)
            finally:
                self.session = self.address = self.transport = self.since = None
                self._stop = self._done = None
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await transport.aclose()
                if end is not None:
                    self._on_lost(address, end)
        finally:
            wipe(rpv)
            done.set()

    async def _watch(self, transport: Any, stop: trio.Event) -> LinkEnd | None:
        """Wait for the administrator's disconnect (None), or for the link to end
        by itself (who ended it and why)."""
        ended: list[LinkEnd] = []
        wait_closed = getattr(transport, "wait_closed", None)
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                if wait_closed is None:  # a transport that cannot be watched (a test's)
                    return
                ended.append(await wait_closed())
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await stop.wait()
            nursery.cancel_scope.cancel()
        return ended[0] if ended else self._ending

    async def end(self, end: LinkEnd) -> None:
        """This HSM ends the link (idle timeout, a broken session): a loss, *end* its why."""
        stop, done = self._stop, self._hold_done
        if stop is not None:
            self._ending = end
            stop.set()
        if done is not None:  # the link may be ending by itself: its cause is recorded then
            with trio.move_on_after(END_WAIT):
                await done.wait()

    async def close(self) -> bool:
        """The administrator's disconnect: close the link; True if one was open."""
        stop, done = self._stop, self._done
        if stop is None or done is None or self.session is None:
            return False
        self._stop = self._done = None
        self._ending = None
        stop.set()
        with trio.move_on_after(END_WAIT):
            await done.wait()
        return True
