"""The emulated PED as a device: serves the device transport to one host at a time.

Theory of operation
-------------------
`EmulatedPed` is the whole device: a `Panel` (screen, keypad, slot), a `PedEngine`
(operations over key images) and its identity (`Info`).  `serve(stream)` speaks the
device side of ``ped.device.connection`` on one byte stream (a Unix socket connection, the
socket pair to the driver's process, or a fake USB device):

* HELLO -> INFO (a HELLO drops every session, as after a host restart);
* SESSION_OPEN -> one `ped.ops.PedSideSession`; it is sans-IO, so each SESSION_DATA
  frame is fed to it at once by the reader and its answers go back as SESSION_DATA;
* each HSM request starts an engine operation as its own task in its own cancel scope,
  so that the session keeps receiving (a CANCEL from the HSM cancels the scope, the
  session answers CANCELLED);  ``RpvRequired`` reads the orange key (or, in ``local``
  mode only, takes ``ped.channel.LOCAL_RPV`` when the operator answers YES to "without
  an orange key?");
* the engine's non-secret events go out as DEVICE_EVENT frames.

Output is queued in order and what is queued together goes out in one write, by one
writer task, except for an operation's answer: the task that queued it sends the queue
itself when nothing is being written (one scheduler pass less per login), shielded from
its session's cancellation (a half-written frame would break the stream), bounded by
`SEND_TIMEOUT` and cut short when the connection goes down; a send that fails or times
out closes the connection, as the writer does.  DEVICE_EVENTs (informational only) are
held for at most `EVENT_HOLD` seconds so that they ride with the next frame (a login's
events go out with its answer, right behind it); a lone event (the PED waiting for a
key) still goes out promptly.
A session ends when the HSM closes it (or the host does): its running operation is
cancelled and the session is finished once that task is done, so that the operation's
last event precedes the SESSION_CLOSE.  When the operator pulls the cable (`Unplug`)
the stream is closed at once, as a real unplug would; the panel is ready for the next
connection ("re-plug").
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Awaitable, Callable, Iterator

import trio

from keys.colors import Color
from keys.errors import KeyImageError
from ped.channel.handshake import PedInfo, RefuseReason
from ped.device.connection import NEED_DATA, DeviceConnection
from ped.device.emulated.engine import DEFAULT_KEY_TIMEOUT, PedEngine, Unplugged
from ped.device.emulated.panel import Panel
from ped.device.messages import (
    DEFAULT_MAX_SESSIONS,
    DEVICE_PROTOCOL_VERSION,
    CloseReason,
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
from ped.wire.framing import Frame

log = logging.getLogger("pedemu")

MODEL = "pedemu"
FIRMWARE = "1.0.0"
WRITER_DRAIN = 2.0
#: How long a DEVICE_EVENT may wait for a frame to ride with (one write instead of
#: several); short enough that a host's log still shows "waiting for a key" at once.
EVENT_HOLD = 0.03
READ_CHUNK = 65536
#: Longest an operation's task may spend writing its answer itself (a host that stops
#: reading); past it the stream is unusable and the connection is closed.
SEND_TIMEOUT = 10.0


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
        self.conn = DeviceConnection(Role.DEVICE)
        # Encoded output in wire order, written by whoever holds `_send_lock`: the writer
        # task, or an operation's task sending its answer (`push`).
        self._pending: list[bytes] = []
        self._closed = False  # no more output is queued (the connection winds down)
        self._wake = trio.Event()  # the writer has something to do
        self._deferring = False  # output is queued by a task that will `push` it itself
        self._send_lock = trio.Lock()
        self._send_scope: trio.CancelScope | None = None  # around a `push`'s write
        self.sessions: dict[int, _Session] = {}
        self.nursery: trio.Nursery | None = None
        self._writer_done = trio.Event()
        # Encoded DEVICE_EVENTs waiting to ride with the next frame (see EVENT_HOLD).
        self._held: list[bytes] = []
        self._hold_deadline = math.inf
        self._writer_wait: trio.CancelScope | None = None

    def send(self, message: DeviceMessage) -> None:
        """Queue a message for the writer task (dropped if its session is gone)."""
        if isinstance(message, SessionData | DeviceEvent) and message.session:
            if message.session not in self.conn.sessions:
                return
        try:
            data = self.conn.send(message)
        except PedError as exc:
            log.debug("not sent: %s", exc)
            return
        if isinstance(message, DeviceEvent):
            self._held.append(data)
            if self._hold_deadline == math.inf:
                self._hold_deadline = trio.current_time() + EVENT_HOLD
                if self._writer_wait is not None:
                    self._writer_wait.deadline = self._hold_deadline
            return
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        """Queue encoded bytes after the events held so far (the order is the wire's),
        except an operation's answer (`deferring`): it goes first and the operation's
        events right behind it, in the same write, so that the host can relay the
        answer before it parses them (``ped.device.host``, `frames_first`)."""
        if not self._deferring:
            self._release_held()
        if self._closed:
            log.debug("not sent: the connection is winding down")
            return
        self._pending.append(data)
        if self._deferring:
            self._release_held()
        else:
            self._wake.set()

    def _release_held(self) -> None:
        if self._held:
            held, self._held = b"".join(self._held), []
            self._hold_deadline = math.inf
            if self._writer_wait is not None:
                self._writer_wait.deadline = math.inf  # (a `push` may send them: no wake-up)
            if self._closed:
                log.debug("not sent: the connection is winding down")
                return
            self._pending.append(held)

    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Queue without waking the writer: the caller `push`es right after."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    async def push(self) -> None:
        """Write what is queued from this task when nothing is being written, else leave
        it to the writer (which is then behind the write in progress, so order holds)."""
        if not self._pending:
            return
        if self._send_lock.locked() or self._closed:
            self._wake.set()
            return
        assert self.nursery is not None
        if self.nursery.cancel_scope.cancel_called or self.ped.panel.unplugged.is_set():
            # Going down, or unplugged (the operation saw it before `_watch_unplug`
            # hangs up): nothing more is written, as with a real cable pulled.
            return
        self._send_lock.acquire_nowait()
        try:
            data = self._take()
            with trio.CancelScope(
                deadline=trio.current_time() + SEND_TIMEOUT, shield=True
            ) as scope:
                self._send_scope = scope
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self._hang_up()
                finally:
                    self._send_scope = None
            if scope.cancelled_caught:
                self._hang_up()  # timed out or cut short: the stream is unusable
        finally:
            self._send_lock.release()

    def _take(self) -> bytes:
        pending, self._pending = self._pending, []
        return pending[0] if len(pending) == 1 else b"".join(pending)

    def _hang_up(self) -> None:
        if self._send_scope is not None:
            self._send_scope.cancel()
        assert self.nursery is not None
        self.nursery.cancel_scope.cancel()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._watch_unplug)
                await self._reader()
                # Let the writer send what is queued (a DEVICE_ERROR saying why we hang
                # up), briefly: the host may be gone.
                self._release_held()
                self._closed = True
                self._wake.set()
                with trio.move_on_after(WRITER_DRAIN):
                    await self._writer_done.wait()
                self._hang_up()
        finally:
            for session in list(self.sessions.values()):
                session.end()
            with trio.CancelScope(shield=True):
                try:
                    await self.stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _watch_unplug(self) -> None:
        try:
            await self.ped.panel.unplugged.wait()
            log.info("PED unplugged")
        finally:
            # Unplugged, or the connection is going down however (this task is
            # cancelled then): a `push` still writing stops at once.
            self._hang_up()

    async def _writer(self) -> None:
        try:
            while True:
                if not self._pending:
                    if self._closed:
                        return
                    # Wait for output; held events wait at most until their deadline.
                    with trio.CancelScope(deadline=self._hold_deadline) as wait:
                        self._writer_wait = wait
                        try:
                            await self._wake.wait()
                        finally:
                            self._writer_wait = None
                    self._wake = trio.Event()
                    if not self._pending:
                        self._release_held()  # nothing to ride with: the events go alone
                    continue
                async with self._send_lock:
                    if not self._pending:
                        continue  # a `push` wrote it meanwhile
                    # Everything queued so far goes out in the same write.
                    try:
                        await self.stream.send_all(self._take())
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        self._hang_up()
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
                messages = list(iter(self.conn.next_event, NEED_DATA))
            except PedError as exc:
                log.warning("host broke the device protocol: %s", exc)
                self._queue(_error_bytes(ErrorCode.PROTOCOL_ERROR, str(exc)))
                return
            for message in messages:  # (outside the `try`: our faults are not the host's)
                self._handle(message)
            # Let an operation just started run (and write its answer) before this task
            # tries the next read, which usually finds nothing and re-arms the poller.
            await trio.lowlevel.checkpoint()

    def _handle(self, message: DeviceMessage) -> None:
        assert self.nursery is not None
        if isinstance(message, Hello):
            dropped = list(self.sessions.values())
            self.sessions.clear()
            for session in dropped:
                session.end()
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
            self.sessions[message.session] = _Session(self, message.session)
            self.send(SessionOpened(message.session))
        elif isinstance(message, SessionData):
            session = self.sessions.get(message.session)
            if session is None:
                return  # closed already; the close crossed this frame
            session.receive(message.frame)
        elif isinstance(message, SessionClose):
            session = self.sessions.pop(message.session, None)
            if session is not None:
                session.end()
        elif isinstance(message, Ping):
            self.send(Pong(message.nonce))


def _error_bytes(code: ErrorCode, detail: str) -> bytes:
    from ped.device.messages import encode_message

    return encode_message(DeviceErrorMessage(code, detail[:200]))


class _Session:
    """One HSM session: a PedSideSession, fed by the reader, and at most one running
    operation (a task of the connection's nursery, in a cancel scope of this session)."""

    def __init__(self, connection: _Connection, session_id: int) -> None:
        self.connection = connection
        self.ped = connection.ped
        self.id = session_id
        self.side = PedSideSession(ped_info=self.ped.ped_info)
        self.tasks: set[trio.CancelScope] = set()
        self.op_scope: trio.CancelScope | None = None
        self.cancelled_by_hsm = False
        self.ending = False
        self.finished = False

    @property
    def live(self) -> bool:
        """Still the connection's session of this id (not dropped by the host)."""
        return self.connection.sessions.get(self.id) is self

    def receive(self, frame: Frame) -> None:
        """One frame from the HSM, served at once (the session is sans-IO)."""
        if self.ending:
            return
        for event in self.side.receive_frame(frame):
            self._on_event(event)
        self.flush()
        if not self.side.is_open:
            self.end()

    def end(self) -> None:
        """Cancel what runs; the session finishes when its last task has."""
        if self.ending:
            return
        self.ending = True
        for scope in self.tasks:
            scope.cancel()
        if not self.tasks:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        live = self.live
        self.side.close(OpClose.NORMAL, "session closed")
        self.flush()
        if live:
            del self.connection.sessions[self.id]
            if self.id in self.connection.conn.sessions:
                self.connection.send(SessionClose(self.id, CloseReason.NORMAL, "PED session ended"))

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        # The scope exists before the task starts, so that `end` cancels it either way.
        scope = trio.CancelScope()
        self.tasks.add(scope)
        assert self.connection.nursery is not None
        self.connection.nursery.start_soon(self._task, scope, fn, *args)

    async def _task(
        self, scope: trio.CancelScope, fn: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        try:
            with scope:
                await fn(*args)
        finally:
            self.tasks.discard(scope)
            if self.ending and not self.tasks:
                self._finish()

    def emit(self, event: DeviceEvent) -> None:
        # Events are non-secret by construction.  The host logs them too (pedserver), so
        # pedemu logs at info only what someone watching it needs: the RPV handshake,
        # refusals and failures (and the engine logs an operation that waits for the
        # operator); the rest, every login's, is debug.
        level = _event_level(event)
        if level and log.isEnabledFor(level):
            log.log(level, "session %d: %s", self.id, event.describe())
        if self.live:
            self.connection.send(event)

    def flush(self) -> None:
        frames = self.side.frames_to_send()
        if self.live:
            for frame in frames:
                self.connection.send(SessionData(self.id, frame))

    def _on_event(self, event: ev.PedEvent) -> None:
        if isinstance(event, ev.RpvRequired):
            self._spawn(self._handshake, event)
        elif isinstance(event, ev.ReadSecretRequested | ev.ImprintRequested | ev.ShowRequested):
            if isinstance(event, ev.ImprintRequested) and event.new_secret is not None:
                # The session wipes its copy when the operation is answered: take our own.
                secret = bytearray(event.new_secret)
            else:
                secret = None
            self._spawn(self._operation, event, secret)
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
            with self.connection.deferring():
                self.flush()
            await self.connection.push()  # the answer leaves from here (module docstring)

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


def _event_level(event: DeviceEvent) -> int:
    """Log level of an event's line; 0: none (the engine logs OP_STARTED itself)."""
    kind = event.kind
    if kind is EventKind.OP_STARTED:
        return 0
    if kind is EventKind.HANDSHAKE or kind is EventKind.KEY_REFUSED:
        return logging.INFO
    if kind is EventKind.OP_FINISHED and event.outcome != "ok":
        return logging.INFO
    return logging.DEBUG


def _local_rpv() -> bytes | None:
    import ped.channel

    return getattr(ped.channel, "LOCAL_RPV", None)
