"""The emulated PED as a device: serves the device transport to one host at a time.

Theory of operation
-------------------
`EmulatedPed` is the whole device: a `Panel` (screen, keypad, slot), a `PedEngine`
(operations over key images) and its identity (`Info`).  `serve(stream)` speaks the
device side of ``ped.device.frames`` on one byte stream (a Unix socket connection, the
socket pair to the driver's process, or a fake USB device):

* HELLO -> INFO (a HELLO drops every session, as after a host restart);
* SESSION_OPEN -> one `ped.ops.PedSideSession` and a task serving it;
  SESSION_DATA frames go to that task, its answers go back as SESSION_DATA;
* each HSM request starts an engine operation in its own cancel scope, so that the
  session keeps receiving (a CANCEL from the HSM cancels the scope, the session answers
  CANCELLED);  ``RpvRequired`` reads the orange key (or, in ``local`` mode only, takes
  ``ped.channel.LOCAL_RPV`` when the operator answers YES to "without an orange key?");
* the engine's non-secret events go out as DEVICE_EVENT frames.

All output goes through one writer task, in order.  When the operator pulls the cable
(`Unplug`) the stream is closed at once, as a real unplug would; the panel is ready for
the next connection ("re-plug").
"""

from __future__ import annotations

import logging
import math
import os

import trio

from keys.colors import Color
from keys.errors import KeyImageError
from ped.channel.handshake import PedInfo, RefuseReason
from ped.device.emulated.engine import DEFAULT_KEY_TIMEOUT, PedEngine, Unplugged
from ped.device.emulated.panel import Panel
from ped.device.frames import (
    DEFAULT_MAX_SESSIONS,
    DEVICE_PROTOCOL_VERSION,
    CloseReason,
    DeviceConnection,
    DeviceErrorMessage,
    DeviceEvent,
    DeviceMessage,
    ErrorCode,
    EventKind,
    Hello,
    Info,
    Ping,
    Pong,
    Role,
    SessionClose,
    SessionData,
    SessionOpen,
    SessionOpened,
)
from ped.errors import PedError
from ped.ops import ErrorCode as OpCode
from ped.ops import PedSideSession
from ped.ops import errors as operr
from ped.ops import events as ev
from ped.ops.messages import CloseReason as OpClose
from ped.transport import PedBusy

log = logging.getLogger("pedemu")

MODEL = "pedemu"
FIRMWARE = "1.0.0"
SESSION_QUEUE = 32
WRITER_DRAIN = 2.0
READ_CHUNK = 65536


class EmulatedPed:
    """One emulated PED (see the module docstring)."""

    def __init__(
        self,
        keyring: str | os.PathLike[str],
        *,
        serial: str = "EMU-0001",
        mode: str = "remote",
        key_timeout: float = DEFAULT_KEY_TIMEOUT,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        if mode not in ("remote", "local"):
            raise ValueError(f"PED mode must be 'remote' or 'local', not {mode!r}")
        self.keyring = keyring
        self.panel = Panel()
        self.engine = PedEngine(self.panel, key_timeout=key_timeout, keyring=keyring)
        self.info = Info(DEVICE_PROTOCOL_VERSION, MODEL, FIRMWARE, serial, mode, max_sessions)
        self.connected = False
        #: Held by whoever serves a host: the PED has one host at a time.
        self.host_lock = trio.Lock()

    @property
    def ped_info(self) -> PedInfo:
        return PedInfo(model=MODEL, serial=self.info.serial, firmware=FIRMWARE)

    async def serve(self, stream: trio.abc.Stream) -> None:
        """Serve one host on *stream* until it closes or the PED is unplugged."""
        if self.panel.unplugged.is_set():
            self.panel.unplugged = trio.Event()  # plugged back in
            self.panel.idle()
        self.connected = True
        try:
            await _Connection(self, stream).run()
        finally:
            self.connected = False


class _Connection:
    def __init__(self, ped: EmulatedPed, stream: trio.abc.Stream) -> None:
        self.ped = ped
        self.stream = stream
        self.conn = DeviceConnection(Role.DEVICE, max_sessions=ped.info.max_sessions)
        self.out_send, self.out_recv = trio.open_memory_channel[bytes](math.inf)
        self.sessions: dict[int, _Session] = {}
        self.nursery: trio.Nursery | None = None
        self._writer_done = trio.Event()

    def send(self, message: DeviceMessage) -> None:
        """Queue a message for the writer task (dropped if its session is gone)."""
        if isinstance(message, SessionData | DeviceEvent) and message.session:
            if message.session not in self.conn.sessions:
                return
        try:
            data = self.conn.send(message)
            self.out_send.send_nowait(data)
        except (PedError, trio.ClosedResourceError) as exc:
            log.debug("not sent: %s", exc)

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._watch_unplug, nursery.cancel_scope)
                await self._reader()
                # Let the writer send what is queued (a DEVICE_ERROR saying why we hang
                # up), briefly: the host may be gone.
                self.out_send.close()
                with trio.move_on_after(WRITER_DRAIN):
                    await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            for session in self.sessions.values():
                session.end()
            with trio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _watch_unplug(self, scope: trio.CancelScope) -> None:
        await self.ped.panel.unplugged.wait()
        log.info("PED unplugged")
        scope.cancel()

    async def _writer(self) -> None:
        try:
            async for data in self.out_recv:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    assert self.nursery is not None
                    self.nursery.cancel_scope.cancel()
                    return
        finally:
            self._writer_done.set()

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.stream.receive_some(READ_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            try:
                self.conn.receive_data(data)
            except PedError as exc:
                log.warning("host broke the device protocol: %s", exc)
                self.out_send.send_nowait(_error_bytes(ErrorCode.PROTOCOL_ERROR, str(exc)))
                return
            while (message := self.conn.next_event()) is not None:
                self._handle(message)

    def _handle(self, message: DeviceMessage) -> None:
        assert self.nursery is not None
        if isinstance(message, Hello):
            for session in self.sessions.values():
                session.end()
            self.sessions.clear()
            if not message.min_version <= DEVICE_PROTOCOL_VERSION <= message.max_version:
                self.send(
                    DeviceErrorMessage(
                        ErrorCode.UNSUPPORTED_VERSION,
                        f"this PED speaks device protocol {DEVICE_PROTOCOL_VERSION}",
                    )
                )
                return
            self.send(self.ped.info)
            log.info("host %r connected", message.host)
        elif isinstance(message, SessionOpen):
            if len(self.sessions) >= self.ped.info.max_sessions:
                self.send(
                    SessionClose(
                        message.session,
                        CloseReason.TOO_MANY_SESSIONS,
                        f"the PED serves at most {self.ped.info.max_sessions}",
                    )
                )
                return
            session = _Session(self, message.session)
            self.sessions[message.session] = session
            self.nursery.start_soon(session.run)
            self.send(SessionOpened(message.session))
        elif isinstance(message, SessionData):
            session = self.sessions.get(message.session)
            if session is None:
                return  # closed already; the close crossed this frame
            try:
                session.frames_send.send_nowait(message.frame)
            except trio.WouldBlock:
                self.send(
                    SessionClose(
                        message.session, CloseReason.PROTOCOL_ERROR, "too many frames queued"
                    )
                )
                session.end()
        elif isinstance(message, SessionClose):
            session = self.sessions.pop(message.session, None)
            if session is not None:
                session.end()
        elif isinstance(message, Ping):
            self.send(Pong(message.nonce))


def _error_bytes(code: ErrorCode, detail: str) -> bytes:
    from ped.device.frames import encode_message

    return encode_message(DeviceErrorMessage(code, detail[:200]))


class _Session:
    """One HSM session: a PedSideSession, its frames, and at most one running operation."""

    def __init__(self, connection: _Connection, session_id: int) -> None:
        self.connection = connection
        self.ped = connection.ped
        self.id = session_id
        self.frames_send, self.frames_recv = trio.open_memory_channel(SESSION_QUEUE)
        self.side = PedSideSession(ped_info=self.ped.ped_info)
        self.scope = trio.CancelScope()
        self.op_scope: trio.CancelScope | None = None
        self.cancelled_by_hsm = False

    def end(self) -> None:
        self.scope.cancel()

    def emit(self, event: DeviceEvent) -> None:
        # Events are non-secret by construction; pedemu's own log shows the same line.
        log.info("session %d: %s", self.id, event.describe())
        self.connection.send(event)

    def flush(self) -> None:
        for frame in self.side.frames_to_send():
            self.connection.send(SessionData(self.id, frame))

    async def run(self) -> None:
        with self.scope:
            try:
                async with trio.open_nursery() as nursery:
                    async for frame in self.frames_recv:
                        for event in self.side.receive_frame(frame):
                            self._on_event(event, nursery)
                        self.flush()
                        if not self.side.is_open:
                            break
                    nursery.cancel_scope.cancel()
            finally:
                self.side.close(OpClose.NORMAL, "session closed")
                self.flush()
                self.connection.sessions.pop(self.id, None)
        if self.id in self.connection.conn.sessions:
            self.connection.send(SessionClose(self.id, CloseReason.NORMAL, "PED session ended"))

    def _on_event(self, event: ev.PedEvent, nursery: trio.Nursery) -> None:
        if isinstance(event, ev.RpvRequired):
            nursery.start_soon(self._handshake, event)
        elif isinstance(event, ev.ReadSecretRequested | ev.ImprintRequested | ev.ShowRequested):
            if isinstance(event, ev.ImprintRequested) and event.new_secret is not None:
                # The session wipes its copy when the operation is answered: take our own.
                secret = bytearray(event.new_secret)
            else:
                secret = None
            nursery.start_soon(self._operation, event, secret)
        elif isinstance(event, ev.CancelRequested):
            if self.op_scope is not None:
                self.cancelled_by_hsm = True
                self.op_scope.cancel()
        elif isinstance(event, ev.SessionFailed):
            log.info("session %d failed: %s", self.id, event.error)
        elif isinstance(event, ev.SessionClosed):
            log.info("session %d closed by the HSM", self.id)

    async def _handshake(self, event: ev.RpvRequired) -> None:
        engine = self.ped.engine
        if self.ped.info.mode == "local":
            local_rpv = _local_rpv()
            if local_rpv is not None:
                try:
                    without_key = await engine.ask_local_rpv(session=self.id, emit=self.emit)
                except (operr.OperationError, PedBusy, Unplugged) as exc:
                    self._refuse(exc)
                    return
                if without_key:
                    self._supply(bytearray(local_rpv))
                    return
        try:
            outcome = await engine.read_secret(
                Color.ORANGE,
                None,
                "Remote PED Vector",
                key_timeout=event.key_timeout,
                session=self.id,
                emit=self.emit,
            )
        except (operr.OperationError, PedBusy, Unplugged) as exc:
            self._refuse(exc)
            return
        self._supply(outcome.secret)

    def _supply(self, rpv: bytearray) -> None:
        try:
            result = self.side.supply_rpv(rpv)
        finally:
            rpv[:] = bytes(len(rpv))
        ok = isinstance(result, ev.ChannelEstablished)
        self.emit(
            DeviceEvent(
                self.id,
                EventKind.HANDSHAKE,
                int(Color.ORANGE),
                outcome="ok" if ok else "rpv-mismatch",
                detail=f"hsm {self.side.hsm_serial or '?'}"[:200],
            )
        )
        self.flush()

    def _refuse(self, exc: BaseException) -> None:
        reason = {
            operr.KeyTimeout: RefuseReason.KEY_TIMEOUT,
            operr.OperationCancelled: RefuseReason.CANCELLED,
            PedBusy: RefuseReason.BUSY,
        }.get(type(exc), RefuseReason.DEVICE_ERROR)
        if self.side.state.value == "await-rpv":
            self.side.refuse(reason, str(exc)[:200])
        self.emit(
            DeviceEvent(
                self.id,
                EventKind.HANDSHAKE,
                int(Color.ORANGE),
                outcome=reason.name.lower().replace("_", "-"),
            )
        )
        self.flush()

    async def _operation(self, event: ev.PedEvent, secret: bytearray | None) -> None:
        engine = self.ped.engine
        self.cancelled_by_hsm = False
        outcome = None
        error: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                self.op_scope = scope
                try:
                    if isinstance(event, ev.ReadSecretRequested):
                        outcome = await engine.read_secret(
                            event.color,
                            event.keyset_id,
                            event.label,
                            key_timeout=event.key_timeout,
                            session=self.id,
                            emit=self.emit,
                        )
                    elif isinstance(event, ev.ImprintRequested):
                        outcome = await engine.imprint(
                            event.color,
                            event.label,
                            new_secret=secret,
                            allow_reuse=event.allow_reuse,
                            key_timeout=event.key_timeout,
                            session=self.id,
                            emit=self.emit,
                        )
                    elif isinstance(event, ev.ShowRequested):
                        await engine.show(event.text, session=self.id, emit=self.emit)
                except (operr.OperationError, PedBusy, Unplugged, KeyImageError) as exc:
                    error = exc
            self.op_scope = None
            if scope.cancelled_caught:
                error = operr.OperationCancelled("cancelled by the HSM")
            self._answer(event, outcome, error)
        finally:
            if secret is not None:
                secret[:] = bytes(len(secret))
            if outcome is not None and getattr(outcome, "secret", None) is not None:
                outcome.secret[:] = bytes(len(outcome.secret))
            self.flush()

    def _answer(self, event: ev.PedEvent, outcome: object, error: BaseException | None) -> None:
        if not self.side.is_open or self.side.current is None:
            return
        if error is not None:
            if isinstance(error, PedBusy):
                code, detail = OpCode.BUSY, "the PED is busy with another operation"
            elif isinstance(error, Unplugged):
                code, detail = OpCode.DEVICE_ERROR, "the PED was unplugged"
            elif isinstance(error, KeyImageError):
                # A key the PED could not read or write: the PED's problem, never the
                # HSM's secret; the message names the file and the fault, no content.
                code, detail = OpCode.DEVICE_ERROR, f"PED key error: {error}"
            else:
                assert isinstance(error, operr.OperationError) and error.code is not None
                code, detail = error.code, error.detail
            self.side.answer_error(code, detail[:200])
            return
        if isinstance(event, ev.ReadSecretRequested):
            self.side.answer_read_secret(
                outcome.secret,
                keyset_id=outcome.keyset_id,
                m=outcome.m,
                n=outcome.n,  # type: ignore[attr-defined]
            )
        elif isinstance(event, ev.ImprintRequested):
            o = outcome
            # The HSM needs the secret it will receive at login whenever it cannot compute
            # it from the secret it sent: for a reused keyset, and for a new PIN keyset
            # (the PED PIN is mixed in by scrypt).  PROTOCOL.md, IMPRINT_RESULT.
            self.side.answer_imprint(
                keyset_id=o.keyset_id,
                m=o.m,
                n=o.n,
                pin=o.pin,  # type: ignore[attr-defined]
                copies=min(o.copies, 255),  # type: ignore[attr-defined]
                reused=o.reused,  # type: ignore[attr-defined]
                secret=o.secret,  # type: ignore[attr-defined]
            )
        elif isinstance(event, ev.ShowRequested):
            self.side.answer_show()


def _local_rpv() -> bytes | None:
    import ped.channel

    return getattr(ped.channel, "LOCAL_RPV", None)
