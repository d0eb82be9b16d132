"""Events the sans-IO sessions give their drivers (frozen attrs, no secrets in repr)."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from keys.colors import Color
from ped.channel.handshake import PedInfo
from ped.errors import PedError
from ped.ops.messages import CloseReason, ImprintResult, Notice, ReadResult, ShowDone

# ---- PED side ------------------------------------------------------------------------


@attrs.frozen
class RpvRequired:
    """An HSM wants a channel: read the RPV from its orange key (or refuse).

    *key_timeout* (seconds) is how long the HSM allows for presenting the key.
    """

    hsm_serial: str
    key_timeout: float


@attrs.frozen
class ChannelEstablished:
    hsm_serial: str


@attrs.frozen
class ReadSecretRequested:
    """Read the secret of a *color* keyset; *keyset_id* is the one the HSM expects (or None)."""

    op_id: int
    color: Color
    keyset_id: bytes | None
    label: str
    key_timeout: float


@attrs.frozen
class ImprintRequested:
    """Imprint *color* keys with *new_secret*, or (if *allow_reuse*) an existing keyset's.

    The PED asks the operator: reuse an existing keyset? (only if allowed), M of N, PIN,
    duplicates.  *new_secret* is None when the HSM wants reuse only.  It is a bytearray
    that the session wipes once the operation is answered: copy what you need first.
    """

    op_id: int
    color: Color
    label: str
    key_timeout: float
    allow_reuse: bool
    new_secret: bytearray | None = attrs.field(repr=False)


@attrs.frozen
class ShowRequested:
    op_id: int
    text: str


@attrs.frozen
class CancelRequested:
    """The HSM cancels *op_id*: stop and answer ``ErrorCode.CANCELLED`` (or the result)."""

    op_id: int


@attrs.frozen
class SessionClosed:
    """The session ended cleanly (goodbye or end of stream); keys are wiped."""

    reason: CloseReason
    text: str = ""


@attrs.frozen
class SessionFailed:
    """The session ended on an error (wrong RPV, tampering, garbage); keys are wiped."""

    error: PedError


PedEvent: TypeAlias = (
    RpvRequired
    | ChannelEstablished
    | ReadSecretRequested
    | ImprintRequested
    | ShowRequested
    | CancelRequested
    | SessionClosed
    | SessionFailed
)

# ---- HSM side ------------------------------------------------------------------------


@attrs.frozen
class ChannelReady:
    """The handshake succeeded; *ped_info* is what the PED said about itself."""

    ped_info: PedInfo


@attrs.frozen
class OperationSucceeded:
    op_id: int
    result: ReadResult | ImprintResult | ShowDone


@attrs.frozen
class OperationFailed:
    op_id: int
    error: PedError


@attrs.frozen
class ProgressNotice:
    notice: Notice


@attrs.frozen
class PedClosed:
    reason: CloseReason
    text: str = ""


HsmEvent: TypeAlias = (
    ChannelReady | OperationSucceeded | OperationFailed | ProgressNotice | PedClosed
)
