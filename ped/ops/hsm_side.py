"""HSM side of a Remote PED session (sans-IO): requests out, frames in, events out.

Theory of operation
-------------------
::

    IDLE        --start_handshake()-->  HANDSHAKING   returns HANDSHAKE_INIT
    HANDSHAKING --HANDSHAKE_RESPONSE--> READY         event ChannelReady(ped_info)
    HANDSHAKING --HANDSHAKE_REFUSED-->  FAILED        raises RpvMismatch / KeyTimeout /
                                                      OperationCancelled / PedBusy / ...
    READY       --read_secret() etc.--> AWAITING      returns the sealed request
    AWAITING    --cancel()----------->  AWAITING      returns the sealed CANCEL (once)
    AWAITING    --NOTICE------------->  AWAITING      event ProgressNotice
    AWAITING    --result / OP_ERROR-->  READY         event OperationSucceeded / OperationFailed
    READY|AWAITING --GOODBYE-------->   CLOSED        event PedClosed
    any         --close()----------->   CLOSED        returns a sealed GOODBYE (if a channel)
    any         --garbage----------->   FAILED        raises a RemoteProtocolError subclass

One operation at a time: a request in AWAITING is a `LocalProtocolError`.  A response
whose op id is not the outstanding one is a `RemoteProtocolError`.  Every failure wipes
the channel keys; open a new session (a new handshake) to carry on.
"""

from __future__ import annotations

import enum

from keys.colors import Color
from ped.channel.errors import ChannelError, HandshakeRefused
from ped.channel.handshake import (
    DEFAULT_SUITE,
    SUITE_NNPSK0_PADDED,
    ChannelInitiator,
    PedInfo,
    RefuseReason,
)
from ped.channel.secure import SecureChannel
from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.ops import events as ev
from ped.ops.errors import (
    KeyTimeout,
    OperationCancelled,
    PedFault,
    Unsupported,
    error_for,
)
from ped.ops.messages import (
    Cancel,
    CloseReason,
    Goodbye,
    ImprintRequest,
    ImprintResult,
    Notice,
    OpError,
    OpMessage,
    ReadResult,
    ReadSecret,
    ShowDone,
    ShowMessage,
    decode_message,
)
from ped.ops.session import SessionBase, printable
from ped.transport import PedBusy
from ped.wire.framing import Frame


class HsmSideState(enum.Enum):
    IDLE = "idle"
    HANDSHAKING = "handshaking"
    READY = "ready"
    AWAITING = "awaiting"
    CLOSED = "closed"
    FAILED = "failed"


_S = HsmSideState
TRANSITIONS: dict[tuple[HsmSideState, str], HsmSideState] = {
    (_S.IDLE, "start"): _S.HANDSHAKING,
    (_S.HANDSHAKING, "response"): _S.READY,
    (_S.READY, "request"): _S.AWAITING,
    (_S.AWAITING, "cancel"): _S.AWAITING,
    (_S.AWAITING, "notice"): _S.AWAITING,
    (_S.AWAITING, "result"): _S.READY,
    (_S.READY, "goodbye"): _S.CLOSED,
    (_S.AWAITING, "goodbye"): _S.CLOSED,
}
_RESPONSE_FOR: dict[type, type] = {
    ReadSecret: ReadResult,
    ImprintRequest: ImprintResult,
    ShowMessage: ShowDone,
}
#: How a handshake refusal reads to the HSM (RPV_MISMATCH is raised as RpvMismatch).
_REFUSAL_ERRORS: dict[RefuseReason, type[PedError]] = {
    RefuseReason.CANCELLED: OperationCancelled,
    RefuseReason.KEY_TIMEOUT: KeyTimeout,
    RefuseReason.DEVICE_ERROR: PedFault,
    RefuseReason.UNSUPPORTED: Unsupported,
}


class HsmSideSession(SessionBase):
    """The HSM's end of one session with a PED.  See the module docstring.

    *ephemeral_private* fixes the X25519 ephemeral key (test vectors only);
    *first_op_id* the first operation id (ids then count up); *suite* the cipher suite
    (`DEFAULT_SUITE`, padded; 1 only to play an HSM built before suite 2).
    """

    def __init__(
        self,
        *,
        rpv: bytes | bytearray,
        hsm_serial: str,
        key_timeout_ms: int = 200_000,
        ephemeral_private: bytes | None = None,
        first_op_id: int = 1,
        suite: int = DEFAULT_SUITE,
    ) -> None:
        self._initiator: ChannelInitiator | None = ChannelInitiator(
            rpv=rpv,
            hsm_serial=hsm_serial,
            key_timeout_ms=key_timeout_ms,
            ephemeral_private=ephemeral_private,
            suite=suite,
        )
        self.suite = suite
        self.hsm_serial: str | None = hsm_serial
        self.key_timeout_ms = key_timeout_ms
        self._channel: SecureChannel | None = None
        self._next_op_id = first_op_id
        self.state = HsmSideState.IDLE
        self.ped_info: PedInfo | None = None
        self.current: ReadSecret | ImprintRequest | ShowMessage | None = None
        self.cancel_sent = False

    TRANSITIONS = TRANSITIONS
    SIDE = "HSM"

    def _teardown(self, state: HsmSideState) -> None:
        self.state = state
        self._wipe()
        self._initiator = None

    # ---- handshake -------------------------------------------------------------------

    def start_handshake(self) -> Frame:
        self._advance("start", remote=False)
        assert self._initiator is not None
        return self._initiator.start()

    # ---- requests --------------------------------------------------------------------

    def _request(self, message: ReadSecret | ImprintRequest | ShowMessage) -> Frame:
        self._advance("request", remote=False)
        assert self._channel is not None
        self._next_op_id = self._next_op_id % 0xFFFFFFFF + 1
        self.current = message
        self.cancel_sent = False
        return self._channel.seal(message.encode())

    def _op_id(self) -> int:
        if self.state is not HsmSideState.READY:
            raise LocalProtocolError(
                f"a new operation needs state ready, not {self.state.value!r} "
                "(one operation at a time; finish the handshake first)"
            )
        return self._next_op_id

    def read_secret(
        self,
        color: Color,
        *,
        keyset_id: bytes | None = None,
        label: str = "",
        key_timeout_ms: int | None = None,
    ) -> Frame:
        """Sealed READ_SECRET; the op id is then `current_op_id`."""
        message = ReadSecret(
            self._op_id(), color, keyset_id, label, key_timeout_ms or self.key_timeout_ms
        )
        return self._request(message)

    def imprint(
        self,
        color: Color,
        *,
        new_secret: bytes | bytearray | None = None,
        allow_reuse: bool = False,
        label: str = "",
        key_timeout_ms: int | None = None,
    ) -> Frame:
        message = ImprintRequest(
            self._op_id(),
            color,
            new_secret,
            allow_reuse,
            label,
            key_timeout_ms or self.key_timeout_ms,
        )
        return self._request(message)

    def show_message(self, text: str) -> Frame:
        return self._request(ShowMessage(self._op_id(), text))

    def cancel(self) -> Frame | None:
        """Sealed CANCEL for the outstanding operation; None if there is none or already sent."""
        if self.state is not HsmSideState.AWAITING or self.cancel_sent or self.current is None:
            return None
        self._advance("cancel", remote=False)
        assert self._channel is not None
        self.cancel_sent = True
        return self._channel.seal(Cancel(self.current.op_id).encode())

    def close(self, reason: CloseReason = CloseReason.NORMAL, text: str = "") -> Frame | None:
        """Sealed GOODBYE if a channel is up (send it), then wipe everything."""
        frame = None
        if self.state in (HsmSideState.READY, HsmSideState.AWAITING) and self._channel is not None:
            frame = self._channel.seal(Goodbye(reason, text).encode())
        if self.state not in (HsmSideState.FAILED,):
            self._teardown(HsmSideState.CLOSED)
        return frame

    # ---- input -----------------------------------------------------------------------

    def receive_frame(self, frame: Frame) -> list[ev.HsmEvent]:
        """Feed one frame from the PED.  Raises typed errors for refusals and garbage."""
        if self.state in (HsmSideState.CLOSED, HsmSideState.FAILED, HsmSideState.IDLE):
            raise LocalProtocolError(
                f"no frame is expected in HSM session state {self.state.value!r}"
            )
        try:
            if self.state is HsmSideState.HANDSHAKING:
                return self._on_handshake(frame)
            assert self._channel is not None
            return self._on_message(decode_message(self._channel.open(frame)))
        except (RemoteProtocolError, ChannelError, PedError):
            self._teardown(HsmSideState.FAILED)
            raise

    def _on_handshake(self, frame: Frame) -> list[ev.HsmEvent]:
        assert self._initiator is not None
        try:
            channel = self._initiator.receive(frame)
        except HandshakeRefused as exc:
            raise _refusal_error(exc, self.suite) from None
        self._advance("response", remote=True)
        self._channel = channel
        self.ped_info = self._initiator.peer_info
        self._initiator = None
        assert self.ped_info is not None
        return [ev.ChannelReady(self.ped_info)]

    def _on_message(self, message: OpMessage) -> list[ev.HsmEvent]:
        if isinstance(message, Goodbye):
            self._advance("goodbye", remote=True)
            self._teardown(HsmSideState.CLOSED)
            return [ev.PedClosed(message.reason, message.text)]
        if not isinstance(message, ReadResult | ImprintResult | ShowDone | OpError | Notice):
            raise RemoteProtocolError(
                f"the PED sent {type(message).__name__}, which only an HSM may send"
            )
        current = self.current
        if self.state is not HsmSideState.AWAITING or current is None:
            raise RemoteProtocolError(
                f"the PED sent {type(message).__name__} with no operation outstanding"
            )
        if message.op_id != current.op_id:
            raise RemoteProtocolError(
                f"the PED answered operation {message.op_id}; operation {current.op_id} "
                "is outstanding"
            )
        if isinstance(message, Notice):
            self._advance("notice", remote=True)
            return [ev.ProgressNotice(message)]
        if isinstance(message, OpError):
            self._finish()
            return [
                ev.OperationFailed(
                    message.op_id,
                    error_for(message.code, printable(message.detail), op_id=message.op_id),
                )
            ]
        expected = _RESPONSE_FOR[type(current)]
        if not isinstance(message, expected):
            raise RemoteProtocolError(
                f"the PED answered {type(current).__name__} with {type(message).__name__}"
            )
        if (isinstance(message, ReadResult | ImprintResult)
                and isinstance(current, ReadSecret | ImprintRequest)
                and message.color != current.color):
            raise RemoteProtocolError(
                f"the PED answered for {Color(message.color).a_label} key; "
                f"{Color(current.color).label} was requested"
            )
        if isinstance(message, ImprintResult) and isinstance(current, ImprintRequest):
            if message.reused and not current.allow_reuse:
                raise RemoteProtocolError("the PED reused a keyset; the HSM did not allow it")
            if not message.reused and current.new_secret is None:
                raise RemoteProtocolError("the PED reused no keyset and had no new secret")
        self._finish()
        return [ev.OperationSucceeded(message.op_id, message)]

    def _finish(self) -> None:
        self._advance("result", remote=True)
        self._drop_current()
        self.cancel_sent = False


def _refusal_error(exc: HandshakeRefused, suite: int) -> PedError:
    reason = RefuseReason(exc.reason)
    if reason is RefuseReason.BUSY:
        return PedBusy("the PED is busy" + (f": {exc.detail}" if exc.detail else ""))
    cls = _REFUSAL_ERRORS.get(reason)
    if cls is None:
        return exc
    detail = "while connecting (orange key)" + (f": {exc.detail}" if exc.detail else "")
    if reason is RefuseReason.UNSUPPORTED and suite == SUITE_NNPSK0_PADDED:
        # A PED from before suite 2 refuses it as a malformed handshake.  No fallback to
        # suite 1: the refusal is unauthenticated, anyone on the path could forge it.
        detail += (
            f" (this HSM asks for cipher suite {suite}, padded frames; a PED that "
            "predates it refuses it: update the PED's firmware)"
        )
    return cls(detail)
