"""pedserver's link relay: one link's frames to and from its PED session, under the PED's lock.

Theory of operation
-------------------
A link's task group runs:

* the reader: keepalives are answered; ``OpBegin`` maps to ``begin_operation`` on the
  link's own PED session (opened at its first operation), which is the PED's lock across
  all links: the link gets ``OpGranted``, or ``Busy`` (after waiting at most what it
  asked for, capped by ``max_op_wait``); ``OpEnd`` releases it; end-to-end frames go to
  the PED session untouched (only their type byte is ever looked at);
* the device pump: frames from the PED session go back on the link, untouched;
* the timer: a keepalive every ``keepalive_interval``; the link is closed with
  IDLE_TIMEOUT when no operation happened for its idle timeout (never while one is
  held or awaited, never on a peer link), and with PEER_UNRESPONSIVE when nothing was
  heard for ``socket_read_rsp_timeout``.

This is the path the benchmark measures: one await per frame each way, no copies.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import trio

from ped.device import DeviceGone
from ped.device.errors import DeviceError
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.link.connection import ConnectionLost
from ped.link.errors import LinkClosed, close_code_for
from ped.link.messages import (
    Busy,
    Close,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    OpBegin,
    OpEnd,
    OpGranted,
    fit_text,
)
from ped.transport import FrameTransport, PedBusy, TransportClosed
from ped.wire.framing import Frame
from ped.wire.types import CloseCode
from pedserver.device import DeviceWatch
from pedserver.links import LinkActivity, LinkRecord
from pedserver.settings import Settings

log = logging.getLogger("pedserver")

#: How long closing a PED session may take when a link ends.
SESSION_CLOSE_GRACE = 2.0
#: After the PED ends an end-to-end session while the link still holds the PED, how long
#: the HSM gets to release it (it does at once after its goodbye) before we conclude the
#: PED dropped the session mid-operation (e.g. it could not open a tampered frame).
ORPHANED_OP_GRACE = 2.0


class LinkRelay:
    """Relays every link of one pedserver to the PED and keeps the PED's holder."""

    def __init__(self, settings: Settings, device: DeviceWatch) -> None:
        self.settings = settings
        self.device = device
        self.holder: LinkRecord | None = None
        self._sessions: dict[int, LinkRecord] = {}  # device session id -> link

    def link_of_session(self, session_id: int) -> LinkRecord | None:
        """The link a PED session belongs to (None when it is not a link's)."""
        return self._sessions.get(session_id)

    async def run(self, record: LinkRecord) -> None:
        """Relay *record* until it ends (closed by either side, or failed)."""
        async with trio.open_nursery() as nursery:
            record.scope = nursery.cancel_scope
            nursery.start_soon(self._timers, record)
            await self._reader(record, nursery)
            nursery.cancel_scope.cancel()

    async def close_link(self, record: LinkRecord, code: CloseCode, text: str) -> None:
        """Send the link a Close saying why, and end it."""
        if not record.end_reason:
            record.end_reason = f"{code.name.lower().replace('_', ' ')}: {text}"
        record.doing = LinkActivity.CLOSING
        await record.link.send_close_quietly(Close(code, fit_text(text)))
        if record.scope is not None:
            record.scope.cancel()

    async def send(self, record: LinkRecord, message: Any) -> None:
        """Send on the link; a lost link ends it (no exception)."""
        try:
            await record.link.send(message)
        except (LinkClosed, LocalProtocolError):
            # Lost, or already closed by another task of this link (its Close went out).
            record.end_reason = record.end_reason or "the client's connection was lost"
            if record.scope is not None:
                record.scope.cancel()
            await trio.lowlevel.checkpoint()

    async def _reader(self, record: LinkRecord, nursery: trio.Nursery) -> None:
        link = record.link
        while True:
            try:
                event = await link.receive()
            except RemoteProtocolError as exc:
                log.warning("link %d: protocol error from %s: %s", record.id, record.peer, exc)
                await self.close_link(record, close_code_for(exc), str(exc))
                return
            record.last_heard = trio.current_time()
            if isinstance(event, Keepalive):
                await self.send(record, KeepaliveAck(event.nonce))
            elif isinstance(event, KeepaliveAck):
                pass
            elif isinstance(event, OpBegin):
                await self._op_begin(record, event, nursery)
            elif isinstance(event, OpEnd):
                await self._op_end(record)
            elif isinstance(event, EndToEnd):
                record.last_activity = trio.current_time()
                if not await self._to_ped(record, event.frame, nursery):
                    return
            elif isinstance(event, Close):
                record.end_reason = record.end_reason or (
                    f"closed by the client: {event.code.name.lower()}"
                    + (f" ({event.text})" if event.text else "")
                )
                return
            elif isinstance(event, ConnectionLost):
                record.end_reason = record.end_reason or "the client's connection was lost"
                return

    async def _to_ped(self, record: LinkRecord, frame: Frame, nursery: trio.Nursery) -> bool:
        """Give an end-to-end frame to the link's PED session; False if the link ended."""
        for attempt in (1, 2):
            session = record.session
            if session is None:
                # The PED ended the session while this link holds the operation: a new
                # session takes the PED's lock before it is used.
                session = await self._ensure_session(record, nursery)
                if session is None:
                    return False
                try:
                    await session.begin_operation(wait=float(self.settings.max_op_wait))
                except PedBusy as exc:
                    await self.close_link(
                        record, close_code_for(exc),
                        "the PED ended the session and is now busy; connect again",
                    )
                    return False
                except TransportClosed as exc:
                    await self._device_failed(record, exc)
                    return False
            try:
                await session.send(frame)
                return True
            except TransportClosed as exc:
                if isinstance(exc, DeviceGone) or attempt == 2:
                    await self._device_failed(record, exc)
                    return False
                await self._drop_session(record, session)  # ended under us: once more
        return False  # pragma: no cover - the loop always returns

    async def _op_begin(self, record: LinkRecord, message: OpBegin, nursery: trio.Nursery) -> None:
        record.last_activity = trio.current_time()
        if self.device.info is None and not await self.device.try_open():
            await self.close_link(
                record, CloseCode.DEVICE_ABSENT,
                f"no PED is attached to pedserver on {self.settings.server_name} "
                f"({self.device.problem})",
            )
            return
        session = await self._ensure_session(record, nursery)
        if session is None:
            return
        wait = min(message.wait_ms / 1000, float(self.settings.max_op_wait))
        record.doing = LinkActivity.WAITING_FOR_PED
        try:
            await session.begin_operation(wait=wait)
        except PedBusy:
            holder = self.holder
            who = (
                f"link {holder.id} from {holder.peer} ({holder.client_name or 'unnamed'})"
                if holder is not None and holder is not record
                else "another session on the PED"
            )
            record.doing = LinkActivity.IDLE
            log.info("link %d: PED busy (held by %s); told the client to retry", record.id, who)
            await self.send(record, Busy(fit_text(who)))
            return
        except TransportClosed as exc:
            await self._device_failed(record, exc)
            return
        self.holder = record
        record.ops += 1
        record.op_started = trio.current_time()
        record.doing = LinkActivity.OPERATING
        # Debug only: the PED's own events say the same at info (see pedserver.events).
        log.debug("link %d: PED operation %d started", record.id, record.ops)
        await self.send(record, OpGranted())

    async def _op_end(self, record: LinkRecord) -> None:
        record.last_activity = trio.current_time()
        await self._end_operation(record)
        record.doing = LinkActivity.IDLE

    async def _end_operation(self, record: LinkRecord) -> None:
        if record.op_started is not None:
            took = trio.current_time() - record.op_started
            log.debug("link %d: PED operation %d ended after %.1f s", record.id, record.ops, took)
            record.op_started = None
        if self.holder is record:
            self.holder = None
        if record.session is not None:
            with trio.CancelScope(shield=True):
                try:
                    await record.session.end_operation()
                except PedError:
                    pass

    async def teardown(self, record: LinkRecord) -> None:
        """The link is over: give the PED back and close its session on the PED."""
        await self._end_operation(record)
        session, record.session = record.session, None
        for key, value in list(self._sessions.items()):
            if value is record:
                del self._sessions[key]
        if session is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(SESSION_CLOSE_GRACE):
                try:
                    await session.aclose()
                except PedError:
                    pass

    async def _ensure_session(
        self, record: LinkRecord, nursery: trio.Nursery
    ) -> FrameTransport | None:
        """The link's PED session, opened (with its pump) if it has none; None if the
        PED cannot give one (the link is then closed with the reason)."""
        if record.session is not None:
            return record.session
        try:
            session = await self.device.driver.open_session()
        except (TransportClosed, DeviceError) as exc:
            await self._device_failed(record, exc)
            return None
        record.session = session
        session_id = getattr(session, "id", None)
        if isinstance(session_id, int):
            self._sessions[session_id] = record
        nursery.start_soon(self._pump, record, session)
        return session

    async def _pump(self, record: LinkRecord, session: FrameTransport) -> None:
        """PED -> link, untouched."""
        while True:
            try:
                frame = await session.receive()
            except TransportClosed as exc:
                if isinstance(exc, DeviceGone) or self.device.info is None:
                    await self._device_failed(record, exc)
                    return
                # The PED ended this end-to-end session (after the HSM's goodbye, or a
                # refused handshake): the link stays; the next operation gets a new one.
                log.info("link %d: the PED ended its session; the next operation opens "
                         "a new one", record.id)
                await self._drop_session(record, session)
                await self._close_if_op_orphaned(record)
                return
            record.last_activity = trio.current_time()
            await self.send(record, EndToEnd(frame))

    async def _close_if_op_orphaned(self, record: LinkRecord) -> None:
        """Tell the HSM when the PED dropped its session in the middle of an operation.

        Without this the HSM would wait for an answer that never comes until its own
        operation timeout (pedo, 920 s by default).  A goodbye also ends the session, but
        the HSM then releases the PED at once, so only an operation still held after a
        grace period with no new session is orphaned.  The close is retriable for the HSM
        (a transport error), never a counted failed login.
        """
        await trio.sleep(ORPHANED_OP_GRACE)
        if record.holds_ped and record.session is None:
            log.warning(
                "link %d: the PED ended the session during an operation; closing the link",
                record.id,
            )
            await self.close_link(
                record,
                CloseCode.PROTOCOL_ERROR,
                "the PED ended the end-to-end session in the middle of an operation "
                "(it refused a frame it could not open); connect again",
            )

    async def _drop_session(self, record: LinkRecord, session: FrameTransport) -> None:
        if record.session is session:
            record.session = None
        for key, value in list(self._sessions.items()):
            if value is record and getattr(session, "id", None) == key:
                del self._sessions[key]
        with trio.CancelScope(shield=True), trio.move_on_after(SESSION_CLOSE_GRACE):
            try:
                await session.aclose()
            except PedError:
                pass

    async def _device_failed(self, record: LinkRecord, exc: Exception) -> None:
        if isinstance(exc, DeviceGone) or self.device.info is None:
            self.device.mark_gone(str(exc))
            text = "the PED went away; check it and connect again"
        else:
            text = "the PED closed this session"
        log.warning("link %d: %s (%s)", record.id, text, type(exc).__name__)
        await self.close_link(record, close_code_for(exc), text)

    async def _timers(self, record: LinkRecord) -> None:
        s = self.settings
        nonce = itertools.count(1)
        next_keepalive = trio.current_time() + s.keepalive_interval
        while True:
            now = trio.current_time()
            idle_at = (
                record.last_activity + record.idle_timeout if record.may_idle_out else math.inf
            )
            dead_at = record.last_heard + s.socket_read_rsp_timeout
            if now >= dead_at:
                log.warning("link %d: nothing heard from %s for %d s", record.id, record.peer,
                            s.socket_read_rsp_timeout)
                await self.close_link(
                    record, CloseCode.PEER_UNRESPONSIVE,
                    f"nothing heard from the client for {s.socket_read_rsp_timeout} s",
                )
                return
            if now >= idle_at:
                log.info("link %d: idle for %d s", record.id, record.idle_timeout)
                await self.close_link(
                    record, CloseCode.IDLE_TIMEOUT,
                    f"no PED operation for {record.idle_timeout} s",
                )
                return
            if now >= next_keepalive:
                await self.send(record, Keepalive(next(nonce) & 0xFFFFFFFF))
                next_keepalive = now + s.keepalive_interval
            await trio.sleep_until(min(next_keepalive, idle_at, dead_at))
