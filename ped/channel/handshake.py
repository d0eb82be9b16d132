"""The end-to-end handshake in frames: HSM (initiator) and PED (responder).

Theory of operation
-------------------
The HSM opens with ``HANDSHAKE_INIT`` (0x20).  Its payload carries, in the clear, what
the PED needs before it can check anything: the cipher suite, the HSM's serial (so the
PED can say which HSM wants it and prompt for that HSM's orange key) and how long the
PED may wait for that key.  Then comes Noise message 1 (``-> psk, e``).  The Noise
prologue is those clear fields, so a relay that alters any of them breaks the handshake.

The PED reads the RPV from the orange key, derives the PSK (`derive_psk`) and reads
message 1.  If it authenticates, the PED answers ``HANDSHAKE_RESPONSE`` (0x21, Noise
message 2 ``<- e, ee`` whose encrypted payload is the PED's `PedInfo`); both ends split
the Noise state into a `SecureChannel`.  If it does not authenticate the RPVs differ,
the PED raises `RpvMismatch` locally and answers ``HANDSHAKE_REFUSED`` (0x22) with
reason ``RPV_MISMATCH``; the HSM raises `RpvMismatch` too.  The PED may refuse for other
reasons (operator cancelled, no orange key in time, busy...), always with a reason code
and a non-secret text, never with anything derived from the RPV.

A refusal is unauthenticated (there is no shared key yet); forging one only denies
service, which anyone on the path can do anyway.

The suite is the HSM's choice: 2 (the default) pads every SEALED plaintext, 1 (HSMs built
before suite 2) does not.  A PED accepts both.  The suite byte is in the prologue, so a
relay that rewrites it breaks the handshake instead of downgrading it; an HSM never falls
back to suite 1 when a PED refuses suite 2 (the refusal is unauthenticated).

Both objects are sans-IO and single-use: build one per session.
"""

from __future__ import annotations

import enum
import hashlib

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ped.channel.errors import (
    DecryptFailed,
    HandshakeFailed,
    HandshakeRefused,
    RpvMismatch,
    UnsupportedSuite,
)
from ped.channel.noise import DHLEN, TAGLEN, NNpsk0Initiator, NNpsk0Responder, wipe
from ped.channel.secure import SecureChannel
from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError, UnknownFrameType
from ped.wire.codec import Reader, Writer
from ped.wire.framing import WIRE_VERSION, Frame
from ped.wire.types import E2EType

#: Cipher suite 1: Noise_NNpsk0_25519_ChaChaPoly_SHA256 with the PSK from `derive_psk`,
#: SEALED plaintexts as they are.  A PED still accepts it (HSMs built before suite 2);
#: an HSM of this code never sends it.
SUITE_NNPSK0_V1 = 1
#: Cipher suite 2: suite 1 with every SEALED plaintext padded (`ped.channel.padding`).
SUITE_NNPSK0_PADDED = 2
#: The suite an HSM asks for.
DEFAULT_SUITE = SUITE_NNPSK0_PADDED
SUPPORTED_SUITES = frozenset({SUITE_NNPSK0_V1, SUITE_NNPSK0_PADDED})
#: HKDF-SHA256 info (domain separation) turning an RPV into the Noise PSK.
PSK_LABEL = b"remote-ped v1 rpv psk"
#: First bytes of the Noise prologue.
PROLOGUE_LABEL = b"remote-ped e2e"
RPV_SIZE = 32
#: The fixed, public "RPV" of a PED cabled to the HSM (ARCHITECTURE.md, "A PED attached
#: locally"): SHA-256("remote-ped/local-ped-channel/v1").  A PED accepts it only in its
#: local mode, never in remote mode.  It gives no secrecy, only one code path.
LOCAL_RPV = hashlib.sha256(b"remote-ped/local-ped-channel/v1").digest()
HSM_SERIAL_MAX = 64
#: Longest the PED may be told to wait for the orange key (1 day, in milliseconds).
MAX_KEY_TIMEOUT_MS = 86_400_000
DETAIL_MAX = 256
NOISE_MESSAGE_SIZE = DHLEN + TAGLEN  # message 1 carries an empty payload


class RefuseReason(enum.IntEnum):
    """Why a PED refused a handshake (one byte in ``HANDSHAKE_REFUSED``)."""

    RPV_MISMATCH = 1  # the orange key's RPV does not match the HSM's
    CANCELLED = 2  # the operator declined or cancelled on the PED
    KEY_TIMEOUT = 3  # no orange key was presented in time
    BUSY = 4  # the PED is serving something else
    UNSUPPORTED = 5  # unknown cipher suite or malformed handshake
    DEVICE_ERROR = 6  # the PED could not read the orange key


def derive_psk(rpv: bytes | bytearray) -> bytearray:
    """Noise PSK = HKDF-SHA256(ikm=RPV, salt=none, info=PSK_LABEL, length=32)."""
    if len(rpv) != RPV_SIZE:
        raise LocalProtocolError(f"an RPV is {RPV_SIZE} bytes; got {len(rpv)}")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=PSK_LABEL)
    return bytearray(hkdf.derive(bytes(rpv)))


def _check_serial(serial: str) -> str:
    raw = serial.encode("utf-8")
    if not 1 <= len(raw) <= HSM_SERIAL_MAX or not all(0x21 <= b <= 0x7E for b in raw):
        raise LocalProtocolError(
            f"HSM serial must be 1-{HSM_SERIAL_MAX} printable ASCII characters without spaces"
        )
    return serial


def _check_timeout_ms(value: int) -> int:
    if not 1 <= value <= MAX_KEY_TIMEOUT_MS:
        raise LocalProtocolError(f"key timeout must be 1-{MAX_KEY_TIMEOUT_MS} ms; got {value}")
    return value


def _info_text(text: str) -> str:
    # Shown by the HSM and logged: printable, one line, at most 64 UTF-8 bytes.
    cleaned = "".join(c if c.isprintable() else "?" for c in str(text))
    return cleaned.encode("utf-8")[:64].decode("utf-8", errors="ignore")


@attrs.frozen
class PedInfo:
    """What the PED says about itself inside handshake message 2 (encrypted, not secret)."""

    model: str = attrs.field(default="Remote PED", converter=_info_text)
    serial: str = attrs.field(default="", converter=_info_text)
    firmware: str = attrs.field(default="", converter=_info_text)

    def encode(self) -> bytes:
        return Writer().text16(self.model).text16(self.serial).text16(self.firmware).getvalue()

    @classmethod
    def decode(cls, data: bytes) -> PedInfo:
        reader = Reader(data, what="PED info")
        info = cls(
            reader.text16("model", max_len=64),
            reader.text16("serial", max_len=64),
            reader.text16("firmware", max_len=64),
        )
        reader.finish()
        return info


@attrs.frozen(repr=False)
class HandshakeInit:
    """Payload of ``HANDSHAKE_INIT``: clear fields plus Noise message 1."""

    hsm_serial: str = attrs.field(validator=lambda _s, _a, v: _check_serial(v))
    key_timeout_ms: int = attrs.field(validator=lambda _s, _a, v: _check_timeout_ms(v))
    noise_message: bytes = attrs.field(converter=bytes)
    suite: int = DEFAULT_SUITE

    @property
    def padded(self) -> bool:
        """Whether the channel this handshake opens pads its SEALED plaintexts (suite 2)."""
        return self.suite == SUITE_NNPSK0_PADDED

    def __repr__(self) -> str:
        return (
            f"HandshakeInit(suite={self.suite}, hsm_serial={self.hsm_serial!r}, "
            f"key_timeout_ms={self.key_timeout_ms})"
        )

    def clear_fields(self) -> bytes:
        return Writer().u8(self.suite).text16(self.hsm_serial).u32(self.key_timeout_ms).getvalue()

    def prologue(self) -> bytes:
        """Noise prologue: label, wire version, then the clear fields exactly as sent."""
        return PROLOGUE_LABEL + bytes((WIRE_VERSION,)) + self.clear_fields()

    def to_frame(self) -> Frame:
        payload = self.clear_fields() + Writer().bytes16(self.noise_message).getvalue()
        return Frame(E2EType.HANDSHAKE_INIT, payload)

    @classmethod
    def from_frame(cls, frame: Frame) -> HandshakeInit:
        _expect(frame, E2EType.HANDSHAKE_INIT)
        reader = Reader(frame.payload, what="HANDSHAKE_INIT")
        suite = reader.u8("suite")
        if suite not in SUPPORTED_SUITES:
            raise UnsupportedSuite(
                f"the HSM asked for cipher suite {suite}; this PED speaks "
                f"{sorted(SUPPORTED_SUITES)}: upgrade the older side"
            )
        serial = reader.text16("hsm serial", min_len=1, max_len=HSM_SERIAL_MAX)
        timeout = reader.u32("key timeout ms", low=1, high=MAX_KEY_TIMEOUT_MS)
        message = reader.bytes16(
            "noise message", min_len=NOISE_MESSAGE_SIZE, max_len=NOISE_MESSAGE_SIZE
        )
        reader.finish()
        try:
            return cls(serial, timeout, message, suite)
        except LocalProtocolError as exc:
            raise FieldOutOfRange(f"HANDSHAKE_INIT: {exc}") from None


def _printable_detail(text: object) -> str:
    return _printable(str(text))


@attrs.frozen
class HandshakeRefusal:
    """Payload of ``HANDSHAKE_REFUSED``: a reason code and a short non-secret text."""

    reason: RefuseReason = attrs.field(converter=RefuseReason)
    detail: str = attrs.field(default="", converter=_printable_detail)

    def to_frame(self) -> Frame:
        detail = self.detail.encode("utf-8")[: DETAIL_MAX * 4].decode("utf-8", errors="ignore")
        payload = Writer().u8(self.reason).text16(detail).getvalue()
        return Frame(E2EType.HANDSHAKE_REFUSED, payload)

    @classmethod
    def from_frame(cls, frame: Frame) -> HandshakeRefusal:
        _expect(frame, E2EType.HANDSHAKE_REFUSED)
        reader = Reader(frame.payload, what="HANDSHAKE_REFUSED")
        reason = reader.u8("reason", low=min(RefuseReason), high=max(RefuseReason))
        detail = reader.text16("detail", max_len=DETAIL_MAX * 4)
        reader.finish()
        return cls(reason, detail)

    def error(self) -> HandshakeFailed:
        """The exception the HSM raises for this refusal."""
        if self.reason is RefuseReason.RPV_MISMATCH:
            return RpvMismatch()
        return HandshakeRefused(self.reason, _printable(self.detail))


def _printable(text: str) -> str:
    # The detail comes from the peer: keep it to one printable line in our messages.
    return "".join(c if c.isprintable() else "?" for c in text)[:DETAIL_MAX]


def _expect(frame: Frame, type_: E2EType) -> None:
    if frame.type != type_:
        raise UnknownFrameType(
            f"expected a {type_.name} frame (0x{type_:02x}), got type 0x{frame.type:02x}"
        )


def _ephemeral(private: bytes | X25519PrivateKey | None) -> X25519PrivateKey | None:
    if private is None or isinstance(private, X25519PrivateKey):
        return private
    if len(private) != 32:
        raise LocalProtocolError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(bytes(private))


class ChannelInitiator:
    """HSM side: `start` gives ``HANDSHAKE_INIT``, `receive` the PED's answer gives a channel.

    *ephemeral_private* (32 bytes) fixes the ephemeral key; only test vectors want that.
    *suite* is `DEFAULT_SUITE` (2, padded); 1 is what an HSM built before suite 2 sends,
    for tests and vectors of that case.
    """

    def __init__(
        self,
        *,
        rpv: bytes | bytearray,
        hsm_serial: str,
        key_timeout_ms: int = 200_000,
        ephemeral_private: bytes | X25519PrivateKey | None = None,
        suite: int = DEFAULT_SUITE,
    ) -> None:
        if suite not in SUPPORTED_SUITES:
            raise LocalProtocolError(
                f"cipher suite {suite} is not one of {sorted(SUPPORTED_SUITES)}"
            )
        psk = derive_psk(rpv)
        self._init = HandshakeInit(
            _check_serial(hsm_serial), key_timeout_ms, b"\x00" * 48, suite
        )
        self._noise: NNpsk0Initiator | None = NNpsk0Initiator(
            psk, self._init.prologue(), _ephemeral(ephemeral_private)
        )
        wipe(psk)
        self._started = False
        self.peer_info: PedInfo | None = None

    def __repr__(self) -> str:
        return f"ChannelInitiator(hsm_serial={self._init.hsm_serial!r}, started={self._started})"

    def start(self) -> Frame:
        if self._started or self._noise is None:
            raise LocalProtocolError("the handshake was already started; build a new initiator")
        self._started = True
        message = self._noise.write_message_1(b"")
        self._init = attrs.evolve(self._init, noise_message=message)
        return self._init.to_frame()

    def receive(self, frame: Frame) -> SecureChannel:
        """Consume the PED's answer; raise `RpvMismatch`/`HandshakeRefused` on refusal."""
        noise = self._noise
        if not self._started or noise is None:
            raise LocalProtocolError("call start() first, once per initiator")
        self._noise = None
        try:
            if frame.type == E2EType.HANDSHAKE_REFUSED:
                raise HandshakeRefusal.from_frame(frame).error()
            _expect(frame, E2EType.HANDSHAKE_RESPONSE)
            reader = Reader(frame.payload, what="HANDSHAKE_RESPONSE")
            message = reader.bytes16("noise message", min_len=NOISE_MESSAGE_SIZE, max_len=1024)
            reader.finish()
            try:
                payload, send, recv = noise.read_message_2(message)
            except DecryptFailed:
                raise RpvMismatch() from None
            try:
                self.peer_info = PedInfo.decode(payload)
            except RemoteProtocolError:
                send.wipe()
                recv.wipe()
                raise
            assert noise.handshake_hash is not None
            return SecureChannel(
                send, recv, noise.handshake_hash, role="initiator", padded=self._init.padded
            )
        finally:
            noise.wipe()


class ChannelResponder:
    """PED side: `receive_init`, then `accept(rpv)` or `refuse(reason)`.

    `accept` returns the ``HANDSHAKE_RESPONSE`` frame and the channel, or raises
    `RpvMismatch`; after that, send `refuse(RefuseReason.RPV_MISMATCH)` to the HSM.
    """

    def __init__(
        self,
        *,
        ped_info: PedInfo | None = None,
        ephemeral_private: bytes | X25519PrivateKey | None = None,
    ) -> None:
        self._ped_info = ped_info or PedInfo()
        self._ephemeral = _ephemeral(ephemeral_private)
        self.init: HandshakeInit | None = None
        self._done = False

    def __repr__(self) -> str:
        serial = self.init.hsm_serial if self.init else None
        return f"ChannelResponder(hsm_serial={serial!r}, done={self._done})"

    def receive_init(self, frame: Frame) -> HandshakeInit:
        if self.init is not None or self._done:
            raise LocalProtocolError("this responder already received a HANDSHAKE_INIT")
        self.init = HandshakeInit.from_frame(frame)
        return self.init

    def accept(self, rpv: bytes | bytearray) -> tuple[Frame, SecureChannel]:
        if self.init is None or self._done:
            raise LocalProtocolError("accept() needs exactly one received HANDSHAKE_INIT")
        self._done = True
        psk = derive_psk(rpv)
        noise = NNpsk0Responder(psk, self.init.prologue(), self._ephemeral)
        wipe(psk)
        self._ephemeral = None
        try:
            try:
                noise.read_message_1(self.init.noise_message)
            except DecryptFailed:
                raise RpvMismatch() from None
            message, send, recv = noise.write_message_2(self._ped_info.encode())
        finally:
            noise.wipe()
        assert noise.handshake_hash is not None
        frame = Frame(E2EType.HANDSHAKE_RESPONSE, Writer().bytes16(message).getvalue())
        channel = SecureChannel(
            send, recv, noise.handshake_hash, role="responder", padded=self.init.padded
        )
        return frame, channel

    def refuse(self, reason: RefuseReason, detail: str = "") -> Frame:
        self._done = True
        self._ephemeral = None
        return HandshakeRefusal(reason, detail).to_frame()
