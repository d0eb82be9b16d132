"""Cloning between two HSMs' partitions of one cloning domain (sans-IO).

`CloneInitiator` / `CloneResponder` run the handshake (``ped.cloning.handshake``: Noise
NNpsk0 keyed by the domain; domains that differ fail here); `ObjectSender` /
`ObjectReceiver` move the objects over the resulting `CloneChannel`
(``ped.cloning.stream``: numbered, sealed, an end marker, all or nothing), in batches
that each fit one relayed answer (``ped.cloning.batches``);
``ped.cloning.messages`` holds the bytes.  docs/protocol/cloning.md documents them.
"""

from ped.cloning.batches import END_ROOM, ObjectBatches, Outgoing
from ped.cloning.errors import (
    CloneAuthFailed,
    CloneIncomplete,
    CloneMisuse,
    CloneProtocolError,
    CloneRefused,
    CloneRejected,
    CloningError,
    DomainMismatch,
)
from ped.cloning.handshake import (
    FINGERPRINT_LABEL,
    PSK_LABEL,
    CloneChannel,
    CloneInitiator,
    CloneResponder,
    derive_clone_psk,
    domain_fingerprint,
    format_fingerprint,
)
from ped.cloning.messages import (
    CLONE_VERSION,
    MAX_OBJECTS,
    CloneDirection,
    ClonedObject,
    CloneInit,
    CloneRefusal,
    CloneRefuseReason,
    CloneResult,
    CloneType,
    EndMarker,
    ResultStatus,
)
from ped.cloning.stream import (
    CloneComplete,
    ObjectReceiver,
    ObjectSender,
    ReceiverState,
    SenderState,
)

__all__ = [
    "CLONE_VERSION",
    "END_ROOM",
    "FINGERPRINT_LABEL",
    "MAX_OBJECTS",
    "PSK_LABEL",
    "CloneAuthFailed",
    "CloneChannel",
    "CloneComplete",
    "CloneDirection",
    "CloneIncomplete",
    "CloneInit",
    "CloneInitiator",
    "CloneMisuse",
    "CloneProtocolError",
    "CloneRefusal",
    "CloneRefuseReason",
    "CloneRefused",
    "CloneRejected",
    "CloneResponder",
    "CloneResult",
    "CloneType",
    "ClonedObject",
    "CloningError",
    "DomainMismatch",
    "EndMarker",
    "ObjectBatches",
    "ObjectReceiver",
    "ObjectSender",
    "Outgoing",
    "ReceiverState",
    "ResultStatus",
    "SenderState",
    "derive_clone_psk",
    "domain_fingerprint",
    "format_fingerprint",
]
