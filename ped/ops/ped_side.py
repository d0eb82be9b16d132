"""PED side of a Remote PED session (sans-IO): frames in, events out, answers to frames.

Theory of operation
-------------------
One `PedSideSession` serves one HSM session on the PED.  The PED's driver (the emulated
PED engine, or firmware) owns the I/O and the operator; this object owns the protocol::

    AWAIT_INIT --HANDSHAKE_INIT--> AWAIT_RPV    event RpvRequired(hsm_serial)
    AWAIT_RPV  --supply_rpv ok-->  READY        event ChannelEstablished; queues RESPONSE
    AWAIT_RPV  --supply_rpv bad--> FAILED       event SessionFailed(RpvMismatch); queues REFUSED
    AWAIT_RPV  --refuse()------->  CLOSED       queues REFUSED(reason)
    READY      --request-------->  IN_OPERATION event ReadSecretRequested / ImprintRequested /
                                                      ShowRequested
    IN_OPERATION --CANCEL(op)--->  IN_OPERATION event CancelRequested (then answer CANCELLED)
    IN_OPERATION --answer_*()--->  READY        queues the sealed result or OP_ERROR
    any open   --GOODBYE / eof-->  CLOSED       event SessionClosed
    any open   --garbage-------->  FAILED       event SessionFailed(error)

Methods that produce output queue frames; drain them with `frames_to_send()` after every
call and send them in order.  Events come back from `receive_frame`, `receive_eof` and
`supply_rpv`.  Misuse by the caller (answering when no operation is running, answering
the wrong kind) raises `LocalProtocolError`; anything bad from the HSM becomes a
`SessionFailed` event (the session is over, its keys wiped; the PED keeps running).
A request that arrives while an operation runs is answered BUSY by this object itself.
A CANCEL for an operation that already ended is ignored (the HSM gets that op's answer).

Usage (the emulated PED and any firmware drive it like this)::

    from ped.ops import PedSideSession, ErrorCode
    from ped.ops import events as ev

    session = PedSideSession(ped_info=PedInfo(model="pedemu", serial="E1", firmware="1.0"))
    while True:
        frame = await transport.receive()          # a ped.wire.framing.Frame (0x20-0x2F)
        for event in session.receive_frame(frame):
            if isinstance(event, ev.RpvRequired):
                rpv = read_orange_key(event.hsm_serial, event.key_timeout)  # bytearray(32)
                session.supply_rpv(rpv)            # or session.refuse(RefuseReason.CANCELLED)
            elif isinstance(event, ev.ReadSecretRequested):
                secret, keyset_id, m, n = read_keys(event.color, event.keyset_id)
                session.answer_read_secret(secret, keyset_id=keyset_id, m=m, n=n)
                # or session.answer_error(ErrorCode.WRONG_COLOR, "inserted a red key")
            elif isinstance(event, ev.ImprintRequested):
                session.answer_imprint(keyset_id=kid, m=2, n=3, pin=True, copies=3,
                                       secret=pin_derived_secret)
            elif isinstance(event, ev.ShowRequested):
                display(event.text); session.answer_show()
            elif isinstance(event, ev.CancelRequested):
                ...  # stop the prompt, then session.answer_error(ErrorCode.CANCELLED)
            elif isinstance(event, (ev.SessionClosed, ev.SessionFailed)):
                ...
        for out in session.frames_to_send():
            await transport.send(out)

(While a read is waiting for the operator the driver keeps receiving frames, so that a
CANCEL arrives; notices such as ``session.send_notice(NoticeKind.INSERT_KEY, 1, 3)`` are
optional.)
"""

from __future__ import annotations

import enum

from keys.colors import Color
from ped.channel.errors import ChannelClosed, ChannelError, RpvMismatch, UnsupportedSuite
from ped.channel.handshake import ChannelResponder, PedInfo, RefuseReason
from ped.channel.secure import SecureChannel
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.ops import events as ev
from ped.ops.errors import ErrorCode
from ped.ops.messages import (
    Cancel,
    CloseReason,
    Goodbye,
    ImprintRequest,
    ImprintResult,
    Notice,
    NoticeKind,
    OpError,
    OpMessage,
    ReadResult,
    ReadSecret,
    ShowDone,
    ShowMessage,
    decode_message,
)
from ped.ops.session import SessionBase, printable
from ped.wire.framing import Frame
from ped.wire.types import E2EType


class PedState(enum.Enum):
    AWAIT_INIT = "await-init"
    AWAIT_RPV = "await-rpv"
    READY = "ready"
    IN_OPERATION = "in-operation"
    CLOSED = "closed"
    FAILED = "failed"


_S = PedState
#: (state, input) -> next state.  Inputs: what arrived from the HSM or what the PED did.
TRANSITIONS: dict[tuple[PedState, str], PedState] = {
    (_S.AWAIT_INIT, "handshake-init"): _S.AWAIT_RPV,
    (_S.AWAIT_RPV, "rpv-accepted"): _S.READY,
    (_S.AWAIT_RPV, "rpv-mismatch"): _S.FAILED,
    (_S.AWAIT_RPV, "refuse"): _S.CLOSED,
    (_S.READY, "request"): _S.IN_OPERATION,
    (_S.READY, "cancel"): _S.READY,  # stale: the operation already ended
    (_S.IN_OPERATION, "cancel"): _S.IN_OPERATION,
    (_S.IN_OPERATION, "request"): _S.IN_OPERATION,  # answered BUSY, current op unaffected
    (_S.IN_OPERATION, "notice"): _S.IN_OPERATION,
    (_S.IN_OPERATION, "answer"): _S.READY,
    (_S.READY, "goodbye"): _S.CLOSED,
    (_S.IN_OPERATION, "goodbye"): _S.CLOSED,
    (_S.READY, "close"): _S.CLOSED,
    (_S.IN_OPERATION, "close"): _S.CLOSED,
}
_OPEN = {_S.AWAIT_INIT, _S.AWAIT_RPV, _S.READY, _S.IN_OPERATION}


class PedSideSession(SessionBase):
    """The PED's end of one HSM session.  See the module docstring."""

    TRANSITIONS = TRANSITIONS
    SIDE = "PED"

    def __init__(
        self,
        *,
        ped_info: PedInfo | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        self._responder = ChannelResponder(ped_info=ped_info, ephemeral_private=ephemeral_private)
        self._channel: SecureChannel | None = None
        self._outbox: list[Frame] = []
        self.state = PedState.AWAIT_INIT
        self.hsm_serial: str | None = None
        #: The request being served (a ReadSecret, ImprintRequest or ShowMessage), if any.
        self.current: ReadSecret | ImprintRequest | ShowMessage | None = None
        self.cancel_requested = False

    # ---- plumbing -------------------------------------------------------------------

    def _seal(self, message: OpMessage) -> None:
        assert self._channel is not None
        self._outbox.append(self._channel.seal(message.encode()))

    def _fail(self, error: PedError) -> list[ev.PedEvent]:
        self._teardown()
        self.state = PedState.FAILED
        return [ev.SessionFailed(error)]

    def _teardown(self) -> None:
        self._wipe()

    def frames_to_send(self) -> list[Frame]:
        """Frames queued by the last calls, oldest first (the queue is emptied)."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def is_open(self) -> bool:
        return self.state in _OPEN

    # ---- input from the HSM -----------------------------------------------------------

    def receive_frame(self, frame: Frame) -> list[ev.PedEvent]:
        """Feed one frame from the HSM; returns the events it causes."""
        if self.state not in _OPEN:
            return []
        try:
            if self.state is PedState.AWAIT_INIT:
                if frame.type != E2EType.HANDSHAKE_INIT:
                    raise RemoteProtocolError(
                        f"frame type 0x{frame.type:02x} arrived before HANDSHAKE_INIT"
                    )
                init = self._responder.receive_init(frame)
                self._advance("handshake-init", remote=True)
                self.hsm_serial = init.hsm_serial
                return [ev.RpvRequired(init.hsm_serial, init.key_timeout_ms / 1000)]
            if self._channel is None:
                raise RemoteProtocolError(
                    f"frame type 0x{frame.type:02x} arrived before the handshake finished"
                )
            return self._on_message(decode_message(self._channel.open(frame)))
        except (RemoteProtocolError, ChannelError) as exc:
            if self.state is PedState.AWAIT_INIT:
                # Malformed or unsupported HANDSHAKE_INIT: say so in the clear, no secrets.
                reason = RefuseReason.UNSUPPORTED
                detail = str(exc) if isinstance(exc, UnsupportedSuite) else "malformed handshake"
                self._outbox.append(self._responder.refuse(reason, detail))
            return self._fail(exc)

    def _on_message(self, message: OpMessage) -> list[ev.PedEvent]:
        if isinstance(message, ReadSecret | ImprintRequest | ShowMessage):
            if self.state is PedState.IN_OPERATION:
                self._advance("request", remote=True)
                if isinstance(message, ImprintRequest):
                    message.wipe()
                self._seal(OpError(message.op_id, ErrorCode.BUSY, "another operation is running"))
                return []
            self._advance("request", remote=True)
            self.current = message
            self.cancel_requested = False
            return [_request_event(message)]
        if isinstance(message, Cancel):
            self._advance("cancel", remote=True)
            if self.current is not None and self.current.op_id == message.op_id:
                if self.cancel_requested:
                    return []
                self.cancel_requested = True
                return [ev.CancelRequested(message.op_id)]
            return []
        if isinstance(message, Goodbye):
            self._advance("goodbye", remote=True)
            self._teardown()
            return [ev.SessionClosed(message.reason, printable(message.text))]
        raise RemoteProtocolError(
            f"the HSM sent {type(message).__name__}, which only a PED may send"
        )

    def receive_eof(self) -> list[ev.PedEvent]:
        """The transport closed.  Ends the session (wiping keys)."""
        if self.state not in _OPEN:
            return []
        self._teardown()
        self.state = PedState.CLOSED
        return [ev.SessionClosed(CloseReason.NORMAL, "the HSM side closed the connection")]

    # ---- the PED's answers ------------------------------------------------------------

    def supply_rpv(self, rpv: bytes | bytearray) -> ev.ChannelEstablished | ev.SessionFailed:
        """Give the RPV read from the orange key.  Queues RESPONSE or REFUSED.

        If the HSM went away while the orange key was being read, nothing is queued and
        the answer is a `SessionFailed` (the PED simply drops the session).
        """
        if self.state in (PedState.CLOSED, PedState.FAILED):
            return ev.SessionFailed(
                ChannelClosed("the HSM session ended before the orange key was read")
            )
        if self.state is not PedState.AWAIT_RPV:
            raise LocalProtocolError(f"supply_rpv() needs state await-rpv, not {self.state.value}")
        try:
            frame, channel = self._responder.accept(rpv)
        except RpvMismatch as exc:
            self._advance("rpv-mismatch", remote=False)
            self._outbox.append(self._responder.refuse(RefuseReason.RPV_MISMATCH))
            return ev.SessionFailed(exc)
        except ChannelError as exc:
            self._outbox.append(self._responder.refuse(RefuseReason.UNSUPPORTED, "bad handshake"))
            result = self._fail(exc)[0]
            assert isinstance(result, ev.SessionFailed)
            return result
        self._advance("rpv-accepted", remote=False)
        self._channel = channel
        self._outbox.append(frame)
        assert self.hsm_serial is not None
        return ev.ChannelEstablished(self.hsm_serial)

    def refuse(self, reason: RefuseReason, detail: str = "") -> None:
        """Refuse the handshake (operator said no, no orange key in time, busy...).

        A no-op if the session already ended (the HSM went away meanwhile).
        """
        if self.state in (PedState.CLOSED, PedState.FAILED):
            return
        self._advance("refuse", remote=False)
        self._outbox.append(self._responder.refuse(RefuseReason(reason), detail))

    def _answer(self, kind: type) -> ReadSecret | ImprintRequest | ShowMessage:
        if self.state is not PedState.IN_OPERATION or self.current is None:
            raise LocalProtocolError("there is no operation to answer")
        if not isinstance(self.current, kind):
            raise LocalProtocolError(
                f"the current operation is {type(self.current).__name__}, not {kind.__name__}"
            )
        return self.current

    def _done(self, message: OpMessage) -> None:
        self._advance("answer", remote=False)
        self._seal(message)
        self._drop_current()
        self.cancel_requested = False

    def answer_read_secret(
        self, secret: bytes | bytearray, *, keyset_id: bytes, m: int = 1, n: int = 1
    ) -> None:
        """Send the derived secret of the keyset read for the current ReadSecret."""
        request = self._answer(ReadSecret)
        assert isinstance(request, ReadSecret)
        result = ReadResult(request.op_id, request.color, keyset_id, m, n, secret)
        try:
            self._done(result)
        finally:
            result.wipe()

    def answer_imprint(
        self,
        *,
        keyset_id: bytes,
        m: int,
        n: int,
        pin: bool,
        copies: int,
        reused: bool = False,
        secret: bytes | bytearray | None = None,
        reused_secret: bytes | bytearray | None = None,
    ) -> None:
        """Report the imprint of the current ImprintRequest.

        *reused*: the operator reused an existing keyset (only if the HSM allowed it).
        *secret*: the login secret (what reading this keyset will return); required when
        *reused* or *pin*, optional otherwise.  ``reused_secret=X`` is shorthand for
        ``reused=True, secret=X``.
        """
        request = self._answer(ImprintRequest)
        assert isinstance(request, ImprintRequest)
        if reused_secret is not None:
            if secret is not None:
                raise LocalProtocolError("pass either secret= or reused_secret=, not both")
            secret, reused = reused_secret, True
        if reused and not request.allow_reuse:
            raise LocalProtocolError("the HSM did not allow reusing a keyset for this imprint")
        if not reused and request.new_secret is None:
            raise LocalProtocolError("the HSM sent no new secret: the imprint must reuse a keyset")
        result = ImprintResult(
            request.op_id, request.color, keyset_id, m, n, pin, copies, reused, secret
        )
        try:
            self._done(result)
        finally:
            result.wipe()

    def answer_show(self) -> None:
        """The message of the current ShowMessage is on the screen."""
        request = self._answer(ShowMessage)
        self._done(ShowDone(request.op_id))

    def answer_error(self, code: ErrorCode, detail: str = "") -> None:
        """End the current operation with a typed error (no secrets in *detail*)."""
        request = self._answer(object)
        self._done(OpError(request.op_id, ErrorCode(code), detail))

    def send_notice(self, kind: NoticeKind, step: int = 0, total: int = 0, text: str = "") -> None:
        """Optional progress for the current operation ("insert key 2 of 3")."""
        request = self._answer(object)
        self._advance("notice", remote=False)
        self._seal(Notice(request.op_id, kind, step, total, text))

    def close(self, reason: CloseReason = CloseReason.NORMAL, text: str = "") -> None:
        """Say goodbye (sealed) and wipe the keys.  Before the channel exists: just wipe."""
        if self.state in (PedState.READY, PedState.IN_OPERATION):
            self._advance("close", remote=False)
            self._seal(Goodbye(reason, text))
        elif self.state in _OPEN:
            self.state = PedState.CLOSED
        self._teardown()



def _request_event(message: ReadSecret | ImprintRequest | ShowMessage) -> ev.PedEvent:
    if isinstance(message, ReadSecret):
        return ev.ReadSecretRequested(
            message.op_id,
            Color(message.color),
            message.keyset_id,
            message.label,
            message.key_timeout_ms / 1000,
        )
    if isinstance(message, ImprintRequest):
        return ev.ImprintRequested(
            message.op_id,
            Color(message.color),
            message.label,
            message.key_timeout_ms / 1000,
            message.allow_reuse,
            message.new_secret,
        )
    return ev.ShowRequested(message.op_id, message.text)
