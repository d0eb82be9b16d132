"""PAKE_INIT and PAKE_RESPONSE (0x24, 0x25): the two CPace messages of a remote RPV init.

Byte layout (PROTOCOL.md, "Remote RPV initialisation")::

    PAKE_INIT      u8 version (1) | u8 suite (1) | u16 len + HSM serial (ASCII)
                   | u32 entry timeout (ms) | u8 password digits | 16 sid | 32 Ya
    PAKE_RESPONSE  u8 version (1) | 32 Yb

Everything in PAKE_INIT before Ya is CPace's associated data ADa, and PAKE_RESPONSE's
version byte is ADb: both enter the CPace transcript, so a relay that changes any of
them changes the key and the run fails.  A refusal is the channel's HANDSHAKE_REFUSED.
Decoding checks every field and raises a `RemoteProtocolError` subclass naming it.
"""

from __future__ import annotations

import attrs

from ped.channel.handshake import HSM_SERIAL_MAX, MAX_KEY_TIMEOUT_MS
from ped.errors import FieldOutOfRange, LocalProtocolError, UnknownFrameType
from ped.pake.cpace import FIELD_SIZE
from ped.wire.codec import Reader, Writer
from ped.wire.framing import Frame
from ped.wire.types import E2EType

PAKE_VERSION = 1
#: CPACE-X25519-SHA512, then the end-to-end channel's suite 2 keyed by the PAKE's key.
SUITE_CPACE_X25519 = 1
SID_SIZE = 16
MIN_DIGITS, MAX_DIGITS = 6, 16


def _serial_ok(serial: str) -> bool:
    raw = serial.encode("utf-8")
    return 1 <= len(raw) <= HSM_SERIAL_MAX and all(0x21 <= b <= 0x7E for b in raw)


def _expect(frame: Frame, type_: E2EType) -> None:
    if frame.type != type_:
        raise UnknownFrameType(
            f"expected a {type_.name} frame (0x{type_:02x}), got type 0x{frame.type:02x}"
        )


def _version(reader: Reader) -> int:
    version = reader.u8("pake version")
    if version != PAKE_VERSION:
        raise FieldOutOfRange(
            f"PAKE version {version} is not one this side speaks ({PAKE_VERSION}): "
            "upgrade the older side"
        )
    return version


@attrs.frozen(repr=False)
class PakeInit:
    """The HSM's opening: who asks, how long the PED may wait for the password, its share."""

    hsm_serial: str
    entry_timeout_ms: int
    digits: int
    sid: bytes = attrs.field(converter=bytes)
    share: bytes = attrs.field(converter=bytes)
    suite: int = SUITE_CPACE_X25519

    def __attrs_post_init__(self) -> None:
        if not _serial_ok(self.hsm_serial):
            raise LocalProtocolError(
                f"HSM serial must be 1-{HSM_SERIAL_MAX} printable ASCII characters"
            )
        if not 1 <= self.entry_timeout_ms <= MAX_KEY_TIMEOUT_MS:
            raise LocalProtocolError(f"entry timeout must be 1-{MAX_KEY_TIMEOUT_MS} ms")
        if not MIN_DIGITS <= self.digits <= MAX_DIGITS:
            raise LocalProtocolError(f"a password has {MIN_DIGITS}-{MAX_DIGITS} digits")
        if len(self.sid) != SID_SIZE or len(self.share) != FIELD_SIZE:
            raise LocalProtocolError(f"sid is {SID_SIZE} bytes and a share {FIELD_SIZE}")

    def __repr__(self) -> str:
        return (f"PakeInit(suite={self.suite}, hsm_serial={self.hsm_serial!r}, "
                f"entry_timeout_ms={self.entry_timeout_ms}, digits={self.digits})")

    def associated_data(self) -> bytes:
        """ADa: the clear fields before the share, exactly as sent."""
        return (Writer().u8(PAKE_VERSION).u8(self.suite).text16(self.hsm_serial)
                .u32(self.entry_timeout_ms).u8(self.digits).raw(self.sid).getvalue())

    def to_frame(self) -> Frame:
        return Frame(E2EType.PAKE_INIT, self.associated_data() + self.share)

    @classmethod
    def from_frame(cls, frame: Frame) -> PakeInit:
        _expect(frame, E2EType.PAKE_INIT)
        reader = Reader(frame.payload, what="PAKE_INIT")
        _version(reader)
        suite = reader.u8("suite", low=SUITE_CPACE_X25519, high=SUITE_CPACE_X25519)
        serial = reader.text16("hsm serial", min_len=1, max_len=HSM_SERIAL_MAX)
        timeout = reader.u32("entry timeout ms", low=1, high=MAX_KEY_TIMEOUT_MS)
        digits = reader.u8("password digits", low=MIN_DIGITS, high=MAX_DIGITS)
        sid = reader.raw(SID_SIZE, "sid")
        share = reader.raw(FIELD_SIZE, "Ya")
        reader.finish()
        try:
            return cls(serial, timeout, digits, sid, share, suite)
        except LocalProtocolError as exc:
            raise FieldOutOfRange(f"PAKE_INIT: {exc}") from None


@attrs.frozen(repr=False)
class PakeResponse:
    """The PED's answer: its share."""

    share: bytes = attrs.field(converter=bytes)

    def __attrs_post_init__(self) -> None:
        if len(self.share) != FIELD_SIZE:
            raise LocalProtocolError(f"a share is {FIELD_SIZE} bytes")

    def __repr__(self) -> str:
        return "PakeResponse()"

    @staticmethod
    def associated_data() -> bytes:
        """ADb: the version byte."""
        return bytes((PAKE_VERSION,))

    def to_frame(self) -> Frame:
        return Frame(E2EType.PAKE_RESPONSE, self.associated_data() + self.share)

    @classmethod
    def from_frame(cls, frame: Frame) -> PakeResponse:
        _expect(frame, E2EType.PAKE_RESPONSE)
        reader = Reader(frame.payload, what="PAKE_RESPONSE")
        _version(reader)
        share = reader.raw(FIELD_SIZE, "Yb")
        reader.finish()
        return cls(share)
