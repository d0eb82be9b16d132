"""The cloning protocol's messages: frame types, clear fields and sealed plaintexts.

Theory of operation
-------------------
Cloning frames use the envelope of ``ped.wire.framing`` (``52 50 01 type len32``) with
the types of `CloneType` (0x78-0x7F, a range no other layer uses; 0x70-0x77 are the client
protocol's).  Two are in the clear:
``CLONE_INIT`` (the handshake's first message and the fields the target needs to pick
its partition) and ``CLONE_REFUSED``; ``CLONE_ACCEPT`` carries Noise message 2.  The
others are sealed in the channel (`ped.cloning.handshake.CloneChannel`): their payload
is a ciphertext whose plaintext is one of `ClonedObject`, `EndMarker`, `CloneResult`.

Every field is bounded (`MAX_*`) so that a peer cannot make either side buffer more than
`MAX_OBJECTS` objects of bounded size.  docs/protocol/cloning.md gives every byte.
"""

from __future__ import annotations

import enum

import attrs

from ped.cloning.errors import CloneMisuse, CloneProtocolError
from ped.errors import PedError
from ped.wire.codec import Reader, Writer

#: Protocol version (first clear byte of CLONE_INIT, in the prologue).
CLONE_VERSION = 1
SERIAL_MAX = 64
FINGERPRINT_SIZE = 8
DIGEST_SIZE = 32
DETAIL_MAX = 256
#: Largest public attribute encoding and sealed value of one object (bytes).
MAX_ATTRIBUTES = 16 * 1024
MAX_VALUE = 16 * 1024
#: Most objects one clone may carry (a partition holds fewer).
MAX_OBJECTS = 100_000


class CloneType(enum.IntEnum):
    """Frame types of the cloning protocol (relayed as opaque bytes by hsmclient)."""

    CLONE_INIT = 0x78
    CLONE_ACCEPT = 0x79
    CLONE_REFUSED = 0x7A
    CLONE_OBJECT = 0x7B  # sealed: a ClonedObject
    CLONE_END = 0x7C  # sealed: an EndMarker
    CLONE_RESULT = 0x7D  # sealed: a CloneResult


class CloneDirection(enum.IntEnum):
    """Which end of the handshake sends the objects (in the prologue: it cannot be flipped)."""

    INITIATOR_SENDS = 1  # e.g. clone, backup: the source HSM opens the channel
    RESPONDER_SENDS = 2  # e.g. restore asked by the target: the target opens it


class CloneRefuseReason(enum.IntEnum):
    """Why a target refused a CLONE_INIT (one byte in CLONE_REFUSED)."""

    DOMAIN_MISMATCH = 1  # the partitions' cloning domains differ
    NO_PARTITION = 2  # the named partition does not exist here
    NOT_ALLOWED = 3  # policy or login forbids cloning into / out of it
    BUSY = 4  # another clone is running on that partition
    UNSUPPORTED = 5  # unknown version or malformed CLONE_INIT


class ResultStatus(enum.IntEnum):
    """The target's verdict, sealed in CLONE_RESULT."""

    STORED = 0  # every object was checked and stored
    REJECTED = 1  # nothing was stored (detail says why)


def _check_serial(value: str) -> None:
    raw = value.encode("utf-8")
    if not 1 <= len(raw) <= SERIAL_MAX or not all(0x21 <= b <= 0x7E for b in raw):
        raise CloneMisuse(f"a partition serial is 1-{SERIAL_MAX} printable ASCII characters")


def _printable(text: object) -> str:
    return "".join(c if c.isprintable() else "?" for c in str(text))[:DETAIL_MAX]


@attrs.frozen
class CloneInit:
    """Clear fields of CLONE_INIT (the Noise message travels beside them)."""

    direction: CloneDirection = attrs.field(converter=CloneDirection)
    source_serial: str = attrs.field(validator=lambda _s, _a, v: _check_serial(v))
    target_serial: str = attrs.field(validator=lambda _s, _a, v: _check_serial(v))
    #: Fingerprint of the initiator's domain (public: `domain_fingerprint`).
    fingerprint: bytes = attrs.field(converter=bytes)
    version: int = CLONE_VERSION

    @fingerprint.validator
    def _check_fingerprint(self, _attribute: object, value: bytes) -> None:
        if len(value) != FINGERPRINT_SIZE:
            raise CloneMisuse(f"a domain fingerprint is {FINGERPRINT_SIZE} bytes")

    def clear_fields(self) -> bytes:
        return (
            Writer().u8(self.version).u8(self.direction).text16(self.source_serial)
            .text16(self.target_serial).raw(self.fingerprint).getvalue()
        )

    @classmethod
    def read(cls, reader: Reader) -> CloneInit:
        version = reader.u8("version")
        if version != CLONE_VERSION:
            raise CloneProtocolError(
                f"CLONE_INIT: version {version}; this HSM speaks {CLONE_VERSION}: upgrade one"
            )
        direction = reader.u8("direction", low=min(CloneDirection), high=max(CloneDirection))
        source = reader.text16("source serial", min_len=1, max_len=SERIAL_MAX)
        target = reader.text16("target serial", min_len=1, max_len=SERIAL_MAX)
        fingerprint = reader.raw(FINGERPRINT_SIZE, "fingerprint")
        try:
            return cls(direction, source, target, fingerprint)
        except PedError as exc:
            raise CloneProtocolError(f"CLONE_INIT: {exc}") from None


@attrs.frozen
class CloneRefusal:
    """CLONE_REFUSED: a reason, the refuser's domain fingerprint, a non-secret text."""

    reason: CloneRefuseReason = attrs.field(converter=CloneRefuseReason)
    fingerprint: bytes = attrs.field(default=bytes(FINGERPRINT_SIZE), converter=bytes)
    detail: str = attrs.field(default="", converter=_printable)

    def encode(self) -> bytes:
        return Writer().u8(self.reason).raw(self.fingerprint).text16(self.detail).getvalue()

    @classmethod
    def decode(cls, payload: bytes) -> CloneRefusal:
        reader = Reader(payload, what="CLONE_REFUSED")
        reason = reader.u8("reason", low=min(CloneRefuseReason), high=max(CloneRefuseReason))
        fingerprint = reader.raw(FINGERPRINT_SIZE, "fingerprint")
        detail = reader.text16("detail", max_len=DETAIL_MAX * 4)
        reader.finish()
        return cls(reason, fingerprint, detail)


@attrs.frozen(repr=False)
class ClonedObject:
    """One object in flight: its number, public attributes and (secret) value."""

    index: int
    attributes: bytes = attrs.field(converter=bytes)
    value: bytes = attrs.field(converter=bytes)

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.index < MAX_OBJECTS:
            raise CloneMisuse(f"object number {self.index} is outside 0-{MAX_OBJECTS - 1}")
        if len(self.attributes) > MAX_ATTRIBUTES or len(self.value) > MAX_VALUE:
            raise CloneMisuse(
                f"an object's attributes and value are at most {MAX_ATTRIBUTES} and "
                f"{MAX_VALUE} bytes"
            )

    def __repr__(self) -> str:
        return (
            f"ClonedObject(index={self.index}, attributes=<{len(self.attributes)} bytes>, "
            "value=<hidden>)"
        )

    def encode(self) -> bytes:
        return (
            Writer().u32(self.index).bytes16(self.attributes).bytes16(self.value).getvalue()
        )

    @classmethod
    def decode(cls, plaintext: bytes) -> ClonedObject:
        reader = Reader(plaintext, what="CLONE_OBJECT")
        index = reader.u32("index", high=MAX_OBJECTS - 1)
        attributes = reader.bytes16("attributes", max_len=MAX_ATTRIBUTES)
        value = reader.bytes16("value", max_len=MAX_VALUE)
        reader.finish()
        return cls(index, attributes, value)


@attrs.frozen
class EndMarker:
    """CLONE_END: how many objects were sent and the SHA-256 over their plaintexts."""

    count: int
    digest: bytes = attrs.field(converter=bytes)

    def encode(self) -> bytes:
        return Writer().u32(self.count).raw(self.digest).getvalue()

    @classmethod
    def decode(cls, plaintext: bytes) -> EndMarker:
        reader = Reader(plaintext, what="CLONE_END")
        count = reader.u32("count", high=MAX_OBJECTS)
        digest = reader.raw(DIGEST_SIZE, "digest")
        reader.finish()
        return cls(count, digest)


@attrs.frozen
class CloneResult:
    """CLONE_RESULT: the target's verdict on the whole set (all or nothing)."""

    status: ResultStatus = attrs.field(converter=ResultStatus)
    stored: int
    detail: str = attrs.field(default="", converter=_printable)

    def encode(self) -> bytes:
        return Writer().u8(self.status).u32(self.stored).text16(self.detail).getvalue()

    @classmethod
    def decode(cls, plaintext: bytes) -> CloneResult:
        reader = Reader(plaintext, what="CLONE_RESULT")
        status = reader.u8("status", low=min(ResultStatus), high=max(ResultStatus))
        stored = reader.u32("stored", high=MAX_OBJECTS)
        detail = reader.text16("detail", max_len=DETAIL_MAX * 4)
        reader.finish()
        return cls(status, stored, detail)
