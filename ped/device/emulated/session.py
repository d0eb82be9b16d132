"""One HSM session on the emulated PED: its sans-IO PedSideSession bridged to the engine.

Theory of operation
-------------------
`EmulatedSession` holds one ``ped.ops.PedSideSession``.  It is sans-IO, so each
SESSION_DATA frame the connection reads is fed to it at once (`receive`) and its answers
go back as SESSION_DATA (`flush`).  Its events become engine operations:

* ``RpvRequired`` reads the orange key (or, in ``local`` mode only, takes
  ``ped.channel.LOCAL_RPV`` when the operator answers YES to "without an orange key?")
  and supplies the RPV, or refuses the handshake;
* each HSM request (read secret, imprint, show) runs as its own task in its own cancel
  scope, so that the session keeps receiving: a CANCEL from the HSM cancels the scope and
  the session answers CANCELLED.  What the engine gives is an `Answer` (a tagged union:
  `ReadOutcome`, `ImprintOutcome`, `Shown` or `Failed`), answered on the PedSideSession;
  the task then writes the answer itself (``output.py``, `push`).  While it works, the
  engine's progress notices ("insert key 2 of 3") go to the HSM as sealed NOTICEs
  (`_notify`), each at once.

A remote RPV initialisation (``ped.pake``) opens with PAKE_INIT instead: the session
asks the operator for the HSM's one-time password (`PedEngine.ask_password`), answers
PAKE_RESPONSE and keeps the channel key; the HANDSHAKE_INIT that follows is then keyed
by that key instead of an orange key's RPV (a wrong password fails it as a wrong orange
key would, and the screen says so): ``password_entry.py``.

The session ends when the HSM closes it (or the host does, or the connection goes):
its running operation is cancelled and the session is finished once that task is done,
so that the operation's last event precedes the SESSION_CLOSE.  The session reaches its
connection only through `SessionHost`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from keys.colors import Color
from keys.errors import KeyImageError
from ped.channel import LOCAL_RPV
from ped.channel.handshake import PedInfo, RefuseReason
from ped.device.emulated.dialog import Unplugged
from ped.device.emulated.engine import PedEngine
from ped.device.emulated.imprint_flow import ImprintOutcome
from ped.device.emulated.password_entry import REFUSALS, PasswordEntry
from ped.device.emulated.read_flow import ReadOutcome
from ped.device.messages import DeviceEvent, DeviceMessage, EventKind, SessionData
from ped.ops import ErrorCode as OpCode
from ped.ops import PedSideSession, PedState
from ped.ops import errors as operr
from ped.ops import events as ev
from ped.ops.messages import CloseReason as OpClose
from ped.ops.messages import NoticeKind
from ped.transport import PedBusy
from ped.wire.framing import Frame
from ped.wire.types import E2EType

log = logging.getLogger("pedemu")

#: What the PED refuses a handshake with, by the error that stopped the RPV read.
_REFUSALS = REFUSALS


@attrs.frozen
class Shown:
    """The message of a show request is on the screen."""


@attrs.frozen
class Failed:
    """The operation ended with a typed error (no secret in *detail*)."""

    code: OpCode
    detail: str


#: How an HSM request ended, as the session answers it.
Answer = ReadOutcome | ImprintOutcome | Shown | Failed
Request = ev.ReadSecretRequested | ev.ImprintRequested | ev.ShowRequested


class SessionHost(Protocol):
    """What a session needs from the connection that carries it."""

    def send(self, message: DeviceMessage) -> None:
        """Queue *message* for the host (dropped if its session is gone)."""

    def is_current(self, session: EmulatedSession) -> bool:
        """*session* is still the connection's session of its id (not dropped)."""

    def forget(self, session: EmulatedSession) -> None:
        """*session* is finished: drop it and tell the host, if it still knows it."""

    def start_soon(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Run *fn* as a task of the connection."""

    def deferring(self) -> contextlib.AbstractContextManager[None]:
        """Queue an operation's answer: its task `push`es it right after."""

    async def push(self) -> None:
        """Write what is queued from this task (``output.DeviceOutput.push``)."""


class EmulatedSession:
    """See the module docstring."""

    def __init__(
        self,
        host: SessionHost,
        session_id: int,
        *,
        engine: PedEngine,
        local_mode: bool,
        ped_info: PedInfo,
    ) -> None:
        self.host = host
        self.id = session_id
        self.engine = engine
        self.local_mode = local_mode
        self.side = PedSideSession(ped_info=ped_info)
        self.tasks: set[trio.CancelScope] = set()
        self.op_scope: trio.CancelScope | None = None
        self.ending = False
        self.finished = False
        self.pake: PasswordEntry | None = None  # a remote RPV initialisation's PAKE

    def receive(self, frame: Frame) -> None:
        """One frame from the HSM, served at once (the session is sans-IO)."""
        if self.ending:
            return
        if (frame.type == E2EType.PAKE_INIT and self.pake is None
                and self.side.state is PedState.AWAIT_INIT):
            self.pake = PasswordEntry(self)
            init = self.pake.start(frame)
            if init is not None:
                self._spawn(self.pake.entry, init)
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
        if self.pake is not None:
            self.pake.wipe()
        self.side.close(OpClose.NORMAL, "session closed")
        self.flush()
        self.host.forget(self)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        # The scope exists before the task starts, so that `end` cancels it either way.
        scope = trio.CancelScope()
        self.tasks.add(scope)
        self.host.start_soon(self._task, scope, fn, *args)

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
        if self.host.is_current(self):
            self.host.send(event)

    def flush(self) -> None:
        frames = self.side.frames_to_send()
        if self.host.is_current(self):
            for frame in frames:
                self.host.send(SessionData(self.id, frame))

    def _notify(self, kind: NoticeKind, step: int, total: int) -> None:
        # Only while the HSM's operation runs (PROTOCOL.md: a NOTICE outside one is a
        # protocol error); once the session ends, the HSM waits for nothing.
        if self.ending or self.side.state is not PedState.IN_OPERATION:
            return
        self.side.send_notice(kind, step, total)
        self.flush()

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
                self.op_scope.cancel()
        elif isinstance(event, ev.SessionFailed):
            log.info("session %d failed: %s", self.id, event.error)
        elif isinstance(event, ev.SessionClosed):
            log.info("session %d closed by the HSM", self.id)

    # ------------------------------------------------------------------ the handshake
    async def _handshake(self, event: ev.RpvRequired) -> None:
        if self.pake is not None:
            self.pake.handshake(event)
            return
        if self.local_mode:
            try:
                without_key = await self.engine.ask_local_rpv(session=self.id, emit=self.emit)
            except (operr.OperationError, PedBusy, Unplugged) as exc:
                self._refuse(exc)
                return
            if without_key:
                self._supply(bytearray(LOCAL_RPV))
                return
        try:
            outcome = await self.engine.read_secret(
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
        reason = _REFUSALS.get(type(exc), RefuseReason.DEVICE_ERROR)
        if self.side.state is PedState.AWAIT_RPV:
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

    # ----------------------------------------------------------------- the operations
    async def _operation(self, event: Request, secret: bytearray | None) -> None:
        answer: Answer | None = None
        try:
            with trio.CancelScope() as scope:
                self.op_scope = scope
                try:
                    answer = await self._perform(event, secret)
                except (operr.OperationError, PedBusy, Unplugged, KeyImageError) as exc:
                    answer = _failure(exc)
            self.op_scope = None
            if scope.cancelled_caught:
                answer = _failure(operr.OperationCancelled("cancelled by the HSM"))
            assert answer is not None
            self._answer(answer)
        finally:
            if secret is not None:
                secret[:] = bytes(len(secret))
            if isinstance(answer, ReadOutcome | ImprintOutcome) and answer.secret is not None:
                answer.secret[:] = bytes(len(answer.secret))
            with self.host.deferring():
                self.flush()
            await self.host.push()  # the answer leaves from here (output.py)

    async def _perform(self, event: Request, secret: bytearray | None) -> Answer:
        if isinstance(event, ev.ReadSecretRequested):
            return await self.engine.read_secret(
                event.color,
                event.keyset_id,
                event.label,
                key_timeout=event.key_timeout,
                session=self.id,
                emit=self.emit,
                notify=self._notify,
            )
        if isinstance(event, ev.ImprintRequested):
            return await self.engine.imprint(
                event.color,
                event.label,
                new_secret=secret,
                allow_reuse=event.allow_reuse,
                key_timeout=event.key_timeout,
                session=self.id,
                emit=self.emit,
                notify=self._notify,
            )
        await self.engine.show(event.text, session=self.id, emit=self.emit)
        return Shown()

    def _answer(self, answer: Answer) -> None:
        if not self.side.is_open or self.side.current is None:
            return
        if isinstance(answer, Failed):
            self.side.answer_error(answer.code, answer.detail[:200])
        elif isinstance(answer, ReadOutcome):
            self.side.answer_read_secret(
                answer.secret, keyset_id=answer.keyset_id, m=answer.m, n=answer.n
            )
        elif isinstance(answer, ImprintOutcome):
            # The HSM needs the secret it will receive at login whenever it cannot compute
            # it from the secret it sent: for a reused keyset, and for a new PIN keyset
            # (the PED PIN is mixed in by scrypt).  PROTOCOL.md, IMPRINT_RESULT.
            self.side.answer_imprint(
                keyset_id=answer.keyset_id,
                m=answer.m,
                n=answer.n,
                pin=answer.pin,
                copies=min(answer.copies, 255),
                reused=answer.reused,
                secret=answer.secret,
            )
        else:
            self.side.answer_show()


def _failure(error: BaseException) -> Failed:
    """The typed error the HSM gets for what stopped an operation."""
    if isinstance(error, PedBusy):
        return Failed(OpCode.BUSY, "the PED is busy with another operation")
    if isinstance(error, Unplugged):
        return Failed(OpCode.DEVICE_ERROR, "the PED was unplugged")
    if isinstance(error, KeyImageError):
        # A key the PED could not read or write: the PED's problem, never the HSM's
        # secret; the message names the file and the fault, no content.
        return Failed(OpCode.DEVICE_ERROR, f"PED key error: {error}")
    assert isinstance(error, operr.OperationError) and error.code is not None
    return Failed(error.code, error.detail)


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
