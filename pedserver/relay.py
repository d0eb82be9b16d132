"""pedserver's link relay: one link's frames to and from its PED session, under the PED's lock.

Theory of operation
-------------------
A link's task group runs:

* the reader: keepalives are answered; ``OpBegin`` maps to ``begin_operation`` on the
  link's own PED session (opened at its first operation), which is the PED's lock across
  all links: the link gets ``OpGranted``, or ``Busy`` (after waiting at most what it
  asked for, capped by ``max_op_wait``); ``OpEnd`` releases it; end-to-end frames go to
  the PED session untouched (only their type byte is ever looked at).  On a link of
  version 3 the frames pipelined behind an ``OpBegin`` wait, unread, until the hold is
  granted (the reader is in ``_op_begin``) and then go to the PED in order; after a
  ``Busy`` they come out as ``Undelivered`` and are dropped (the HSM sends them again);
* the device pump: frames from the PED session go back on the link, untouched;
* the deadlines (`pedserver.deadlines`): keepalives, and the link's end when it is
  idle, silent, has no RPV handshake in time, or holds the PED too long (longer than
  the operation timeout its OP_BEGIN announced, plus a grace, or ``max_op_hold``).

A relay cannot read the channel, but the frame types say what happened: the PED
answered a handshake (HANDSHAKE_RESPONSE), then sealed an answer (a request from
whoever holds the channel reached it).  A handshake that no sealed answer followed
before the PED's session ended is logged as never confirmed: a replayed
HANDSHAKE_INIT looks exactly like that (SECURITY.md, watching pedserver's log).

``mode show`` says what a link waits for: the PED (its lock, then its operation), or,
once the PED reported the operation finished (its answer already relayed), the link
("answer sent, waiting for the link") until the link's next frame; during a route flap
the answer is stuck in the network, not at the PED.

This is the path the benchmark measures: one await per frame each way, no copies.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from ped.device import DeviceEvent, DeviceGone, EventKind
from ped.device.errors import DeviceError
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.link.connection import ConnectionLost, Undelivered
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
from ped.wire.types import CloseCode, E2EType
from pedserver.deadlines import LinkDeadlines
from pedserver.device import DeviceWatch
from pedserver.links import ChannelSeen, LinkActivity, LinkRecord
from pedserver.settings import Settings

log = logging.getLogger("pedserver")

#: How long closing a PED session may take when a link ends.
SESSION_CLOSE_GRACE = 2.0
#: After the PED ends an end-to-end session while the link still holds the PED, how long
#: the HSM gets to release it (it does at once after its goodbye) before we conclude the
#: PED dropped the session mid-operation (e.g. it could not open a tampered frame).
ORPHANED_OP_GRACE = 2.0

_SEALED = int(E2EType.SEALED)
_HANDSHAKE_RESPONSE = int(E2EType.HANDSHAKE_RESPONSE)


class LinkRelay:
    """Relays every link of one pedserver to the PED and keeps the PED's holder."""

    def __init__(self, settings: Settings, device: DeviceWatch) -> None:
        self.settings = settings
        self.device = device
        self.holder: LinkRecord | None = None
        self._sessions: dict[int, LinkRecord] = {}  # device session id -> link
        self._deadlines = LinkDeadlines(settings, close_link=self.close_link, send=self.send)

    def link_of_session(self, session_id: int) -> LinkRecord | None:
        """The link a PED session belongs to (None when it is not a link's)."""
        return self._sessions.get(session_id)

    def hold_bound(self, record: LinkRecord) -> int | None:
        """How long *record*'s hold of the PED may last (``mode show``); None: none."""
        return self._deadlines.hold_bound(record)

    def on_ped_event(self, event: object) -> None:
        """The PED finished a link's operation: its answer has gone to the link (the
        driver reports events after relaying the frames before them), so from now on
        the operation waits for the link, not for the PED."""
        if not isinstance(event, DeviceEvent) or event.kind is not EventKind.OP_FINISHED:
            return
        record = self._sessions.get(event.session) if event.session else None
        if record is not None and record.doing is LinkActivity.OPERATING:
            record.doing = LinkActivity.ANSWERED

    async def run(self, record: LinkRecord) -> None:
        """Relay *record* until it ends (closed by either side, or failed)."""
        async with trio.open_nursery() as nursery:
            record.scope = nursery.cancel_scope
            nursery.start_soon(self._deadlines.run, record)
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
                if record.doing is LinkActivity.ANSWERED:
                    record.doing = LinkActivity.OPERATING  # another request in this hold
                if not record.sent_in_hold:
                    record.sent_in_hold = True
                    record.wake_timers()
                if not await self._to_ped(record, event.frame, nursery):
                    return
            elif isinstance(event, Undelivered):
                log.debug("link %d: dropped a frame pipelined behind a refused hold", record.id)
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
        record.wake_timers()
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
            record.wake_timers()
            log.info("link %d: PED busy (held by %s); told the client to retry", record.id, who)
            await self.send(record, Busy(fit_text(who)))
            return
        except TransportClosed as exc:
            await self._device_failed(record, exc)
            return
        self.holder = record
        record.ops += 1
        record.op_started = trio.current_time()
        record.sent_in_hold = False
        record.doing = LinkActivity.OPERATING
        self._deadlines.hold_granted(record, message.op_timeout)
        record.wake_timers()
        # Debug only: the PED's own events say the same at info (see pedserver.events).
        log.debug("link %d: PED operation %d started", record.id, record.ops)
        await self.send(record, OpGranted())

    async def _op_end(self, record: LinkRecord) -> None:
        record.last_activity = trio.current_time()
        await self._end_operation(record)
        record.doing = LinkActivity.IDLE
        record.wake_timers()

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
        self._channel_ended(record)
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
                self._channel_ended(record)
                await self._drop_session(record, session)
                await self._close_if_op_orphaned(record)
                return
            record.last_activity = trio.current_time()
            kind = frame.type
            if kind == _SEALED:
                if record.channel is ChannelSeen.ANSWERED:
                    self._channel_confirmed(record)
            elif kind == _HANDSHAKE_RESPONSE:
                self._handshake_answered(record)
            await self.send(record, EndToEnd(frame))

    def _handshake_answered(self, record: LinkRecord) -> None:
        self._channel_ended(record)  # a second handshake on the link: the first is over
        record.handshakes += 1
        record.channel = ChannelSeen.ANSWERED
        record.answered_at = time.time()
        record.wake_timers()

    def _channel_confirmed(self, record: LinkRecord) -> None:
        record.channel = ChannelSeen.CONFIRMED
        log.info("link %d: the PED sealed an answer: the HSM side holds the channel of the "
                 "RPV handshake answered %.0f s ago", record.id, time.time() - record.answered_at)

    def _channel_ended(self, record: LinkRecord) -> None:
        """The PED's session (and so its channel) is over: say so if nothing sealed
        ever followed its handshake (what a replayed HANDSHAKE_INIT looks like)."""
        if record.channel is ChannelSeen.ANSWERED:
            log.warning(
                "link %d from %s (%s): the RPV handshake the PED answered at %s was never "
                "confirmed (no operation followed; the HSM side never sealed a request): "
                "if no HSM connected to this PED then, it was a replayed handshake",
                record.id, record.peer, record.client_name or "unnamed",
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.answered_at)),
            )
        record.channel = ChannelSeen.NONE

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
