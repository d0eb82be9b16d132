"""PED operations inside the end-to-end channel, and the sans-IO sessions of both ends.

* ``ped.ops.messages``: the operation messages (0x50-0x6F), pure encode/decode.
* ``ped.ops.events``: events the sessions return (frozen attrs).
* ``ped.ops.ped_side.PedSideSession``: the PED's end (emulated PED, firmware).  Its module
  docstring has the driving loop.
* ``ped.ops.hsm_side.HsmSideSession``: the HSM's end (``ped.hsm_api`` wraps it in trio).
* ``ped.ops.errors``: typed operation errors and `ErrorCode`.

Quick PED-side example (the emulated PED does this in its own I/O loop)::

    from ped.channel import PedInfo, RefuseReason
    from ped.ops import PedSideSession, ErrorCode, events as ev

    session = PedSideSession(ped_info=PedInfo(model="pedemu", serial="E1", firmware="1"))
    for event in session.receive_frame(frame):      # frame: ped.wire.framing.Frame
        match event:
            case ev.RpvRequired(hsm_serial=serial, key_timeout=t):
                session.supply_rpv(rpv_from_orange_key)   # -> ChannelEstablished | SessionFailed
            case ev.ReadSecretRequested(color=c, keyset_id=k):
                session.answer_read_secret(secret, keyset_id=kid, m=2, n=3)
            case ev.ImprintRequested():
                session.answer_imprint(keyset_id=kid, m=1, n=1, pin=False, copies=1)
            case ev.ShowRequested(text=text):
                session.answer_show()
            case ev.CancelRequested():
                session.answer_error(ErrorCode.CANCELLED)
    for out in session.frames_to_send():
        await transport.send(out)
"""

from ped.ops import events
from ped.ops.errors import (
    BadRequest,
    ErrorCode,
    KeysetMismatch,
    KeyTimeout,
    NoBlankKey,
    OperationCancelled,
    OperationError,
    OperationTimeout,
    PedFault,
    Unsupported,
    WrongColor,
)
from ped.ops.hsm_side import HsmSideSession, HsmSideState
from ped.ops.messages import CloseReason, NoticeKind
from ped.ops.ped_side import PedSideSession, PedState

__all__ = [
    "BadRequest",
    "CloseReason",
    "ErrorCode",
    "HsmSideSession",
    "HsmSideState",
    "KeyTimeout",
    "KeysetMismatch",
    "NoBlankKey",
    "NoticeKind",
    "OperationCancelled",
    "OperationError",
    "OperationTimeout",
    "PedFault",
    "PedSideSession",
    "PedState",
    "Unsupported",
    "WrongColor",
    "events",
]
