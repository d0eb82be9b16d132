"""The cloning handshake: a Noise NNpsk0 channel between two HSMs keyed by the cloning domain.

Theory of operation
-------------------
Two partitions may exchange objects only if they hold the same cloning domain (the red
key's secret).  The channel is the RPV channel's construction (``ped.channel``:
Noise_NNpsk0_25519_ChaChaPoly_SHA256) with the PSK derived from the *domain* under its
own HKDF label (`PSK_LABEL`), so a domain key and an RPV never give the same PSK even if
the bytes were equal.  The Noise prologue is `PROLOGUE_LABEL`, the wire version and the
clear fields of ``CLONE_INIT``: protocol version, direction (which end sends objects),
the source and target partitions' serials and the initiator's domain fingerprint.  A
relay (hsmclient) that changes any of them, or turns a backup into a restore, breaks the
handshake.

The responder's key opens the initiator's first message only if the domains are equal,
so **domains that differ fail at the handshake**: the responder raises `DomainMismatch`
and answers ``CLONE_REFUSED`` (reason ``DOMAIN_MISMATCH``, with its own fingerprint); the
initiator raises `DomainMismatch` naming both fingerprints.  No object has moved and the
target has created nothing: it checks the domain before it builds anything.

A fingerprint (`domain_fingerprint`) is 8 bytes of HKDF of the domain under a third
label: enough to tell two domains apart in a message, useless to recover the secret.

`CloneInitiator` and `CloneResponder` are sans-IO and single use; both yield a
`CloneChannel`, which seals frames with the frame type as associated data so that a
sealed frame cannot be passed off as another type.
"""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ped.channel.errors import DecryptFailed, HandshakeFailed, NonceExhausted
from ped.channel.noise import (
    DHLEN,
    NOISE_MAX_MESSAGE,
    TAGLEN,
    CipherState,
    NNpsk0Initiator,
    NNpsk0Responder,
    wipe,
)
from ped.cloning.errors import (
    CloneAuthFailed,
    CloneMisuse,
    CloneProtocolError,
    CloneRefused,
    DomainMismatch,
)
from ped.cloning.messages import (
    FINGERPRINT_SIZE,
    CloneDirection,
    CloneInit,
    CloneRefusal,
    CloneRefuseReason,
    CloneType,
)
from ped.errors import PedError
from ped.wire.codec import Reader, Writer
from ped.wire.framing import WIRE_VERSION, Frame

#: HKDF-SHA256 info turning a cloning domain into the Noise PSK (not the RPV's label).
PSK_LABEL = b"remote-ped v1 cloning domain psk"
#: HKDF-SHA256 info of a domain's public fingerprint.
FINGERPRINT_LABEL = b"remote-ped v1 cloning domain fingerprint"
#: First bytes of the Noise prologue.
PROLOGUE_LABEL = b"remote-ped clone"
#: A domain is the red key's secret as the HSM receives it (32 bytes today).
DOMAIN_MIN, DOMAIN_MAX = 16, 64
NOISE_MESSAGE_SIZE = DHLEN + TAGLEN  # both handshake messages carry an empty payload


def _check_domain(domain: bytes | bytearray) -> None:
    if not DOMAIN_MIN <= len(domain) <= DOMAIN_MAX:
        raise CloneMisuse(f"a cloning domain is {DOMAIN_MIN}-{DOMAIN_MAX} bytes")


def _hkdf(domain: bytes | bytearray, info: bytes, length: int) -> bytearray:
    _check_domain(domain)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info)
    return bytearray(hkdf.derive(bytes(domain)))


def derive_clone_psk(domain: bytes | bytearray) -> bytearray:
    """Noise PSK = HKDF-SHA256(ikm=domain, salt=none, info=PSK_LABEL, length=32)."""
    return _hkdf(domain, PSK_LABEL, 32)


def domain_fingerprint(domain: bytes | bytearray) -> bytes:
    """The domain's 8-byte public fingerprint (HKDF under `FINGERPRINT_LABEL`)."""
    return bytes(_hkdf(domain, FINGERPRINT_LABEL, FINGERPRINT_SIZE))


def format_fingerprint(fingerprint: bytes) -> str:
    """``7f23-f4a9-277e-ba05``: how messages show a fingerprint (all zero: unknown)."""
    if not any(fingerprint):
        return ""
    text = fingerprint.hex()
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def prologue(init: CloneInit) -> bytes:
    return PROLOGUE_LABEL + bytes((WIRE_VERSION,)) + init.clear_fields()


def _expect(frame: Frame, *types: CloneType) -> None:
    if frame.type not in types:
        names = " or ".join(f"{t.name} (0x{t:02x})" for t in types)
        raise CloneProtocolError(f"expected {names}, got frame type 0x{frame.type:02x}")


def _ephemeral(private: bytes | None) -> X25519PrivateKey | None:
    if private is None:
        return None
    if len(private) != 32:
        raise CloneMisuse("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(bytes(private))


class CloneChannel:
    """One end of an established cloning channel: seals and opens typed frames."""

    def __init__(
        self,
        send: CipherState,
        recv: CipherState,
        handshake_hash: bytes,
        *,
        role: Literal["initiator", "responder"],
        sends_objects: bool,
    ) -> None:
        self._send = send
        self._recv = recv
        self.handshake_hash = handshake_hash
        self.role = role
        #: Whether this end is the source (sends objects) or the target (receives them).
        self.sends_objects = sends_objects
        self.closed = False

    def __repr__(self) -> str:
        return (
            f"CloneChannel(role={self.role}, sends_objects={self.sends_objects}, "
            f"sent={self._send.n}, received={self._recv.n}, closed={self.closed})"
        )

    def seal(self, type_: CloneType, plaintext: bytes | bytearray) -> Frame:
        if self.closed:
            raise CloneMisuse("the cloning channel is closed; start a new clone")
        if len(plaintext) > NOISE_MAX_MESSAGE - TAGLEN:
            raise CloneMisuse(f"a sealed cloning message is at most {NOISE_MAX_MESSAGE} bytes")
        try:
            return Frame(type_, self._send.encrypt_with_ad(bytes((type_,)), plaintext))
        except NonceExhausted as exc:
            self.close()
            raise CloneMisuse(str(exc)) from None

    def open(self, frame: Frame, *types: CloneType) -> bytes:
        """Decrypt a sealed frame of one of *types*; any failure closes the channel."""
        if self.closed:
            raise CloneMisuse("the cloning channel is closed; start a new clone")
        try:
            _expect(frame, *types)
            if not TAGLEN <= len(frame.payload) <= NOISE_MAX_MESSAGE:
                raise CloneProtocolError(f"a sealed cloning frame of {len(frame.payload)} bytes")
            try:
                return self._recv.decrypt_with_ad(bytes((frame.type,)), frame.payload)
            except (DecryptFailed, NonceExhausted):
                raise CloneAuthFailed(
                    f"a sealed {CloneType(frame.type).name} frame failed authentication "
                    "(tampered, replayed, reordered or cut in transit)"
                ) from None
        except PedError:
            self.close()
            raise

    def close(self) -> None:
        """Wipe both keys; idempotent."""
        self.closed = True
        self._send.wipe()
        self._recv.wipe()


class CloneInitiator:
    """The end that opens the channel: `start` gives CLONE_INIT, `receive` the answer.

    *ephemeral_private* (32 bytes) fixes the ephemeral key: test vectors only.
    """

    def __init__(
        self,
        *,
        domain: bytes | bytearray,
        direction: CloneDirection,
        source_serial: str,
        target_serial: str,
        ephemeral_private: bytes | None = None,
    ) -> None:
        self._fingerprint = domain_fingerprint(domain)
        self.init = CloneInit(direction, source_serial, target_serial, self._fingerprint)
        psk = derive_clone_psk(domain)
        self._noise: NNpsk0Initiator | None = NNpsk0Initiator(
            psk, prologue(self.init), _ephemeral(ephemeral_private)
        )
        wipe(psk)
        self._started = False

    def __repr__(self) -> str:
        return f"CloneInitiator({self.init!r}, started={self._started})"

    def start(self) -> Frame:
        if self._started or self._noise is None:
            raise CloneMisuse("this handshake was already started; build a new initiator")
        self._started = True
        message = self._noise.write_message_1(b"")
        payload = self.init.clear_fields() + Writer().bytes16(message).getvalue()
        return Frame(CloneType.CLONE_INIT, payload)

    def receive(self, frame: Frame) -> CloneChannel:
        """The responder's answer: a channel, or `DomainMismatch` / `CloneRefused`."""
        noise = self._noise
        if not self._started or noise is None:
            raise CloneMisuse("call start() first, once per initiator")
        self._noise = None
        ours = format_fingerprint(self._fingerprint)
        try:
            _expect(frame, CloneType.CLONE_ACCEPT, CloneType.CLONE_REFUSED)
            if frame.type == CloneType.CLONE_REFUSED:
                refusal = CloneRefusal.decode(frame.payload)
                if refusal.reason is CloneRefuseReason.DOMAIN_MISMATCH:
                    raise DomainMismatch(ours, format_fingerprint(refusal.fingerprint))
                raise CloneRefused(refusal.reason, refusal.detail)
            reader = Reader(frame.payload, what="CLONE_ACCEPT")
            message = reader.bytes16(
                "noise message", min_len=NOISE_MESSAGE_SIZE, max_len=NOISE_MESSAGE_SIZE
            )
            reader.finish()
            try:
                payload, send, recv = noise.read_message_2(message)
            except (DecryptFailed, HandshakeFailed):
                raise DomainMismatch(ours) from None
            if payload:
                send.wipe()
                recv.wipe()
                raise CloneProtocolError("CLONE_ACCEPT: message 2 carries no payload")
            assert noise.handshake_hash is not None
            return CloneChannel(
                send, recv, noise.handshake_hash, role="initiator",
                sends_objects=self.init.direction is CloneDirection.INITIATOR_SENDS,
            )
        finally:
            noise.wipe()


class CloneResponder:
    """The other end: `receive_init`, pick the partition, then `accept(domain)` or `refuse`.

    `accept` returns CLONE_ACCEPT and the channel, or raises `DomainMismatch`; then send
    `refuse(CloneRefuseReason.DOMAIN_MISMATCH)`, which carries this side's fingerprint.
    """

    def __init__(self, *, ephemeral_private: bytes | None = None) -> None:
        self._ephemeral = _ephemeral(ephemeral_private)
        self.init: CloneInit | None = None
        self._noise_message = b""
        self._fingerprint = bytes(FINGERPRINT_SIZE)
        self._done = False

    def __repr__(self) -> str:
        return f"CloneResponder({self.init!r}, done={self._done})"

    def receive_init(self, frame: Frame) -> CloneInit:
        if self.init is not None or self._done:
            raise CloneMisuse("this responder already received a CLONE_INIT")
        _expect(frame, CloneType.CLONE_INIT)
        reader = Reader(frame.payload, what="CLONE_INIT")
        init = CloneInit.read(reader)
        self._noise_message = reader.bytes16(
            "noise message", min_len=NOISE_MESSAGE_SIZE, max_len=NOISE_MESSAGE_SIZE
        )
        reader.finish()
        self.init = init
        return init

    def accept(self, domain: bytes | bytearray) -> tuple[Frame, CloneChannel]:
        init = self.init
        if init is None or self._done:
            raise CloneMisuse("accept() needs exactly one received CLONE_INIT")
        self._done = True
        self._fingerprint = domain_fingerprint(domain)
        psk = derive_clone_psk(domain)
        noise = NNpsk0Responder(psk, prologue(init), self._ephemeral)
        wipe(psk)
        self._ephemeral = None
        try:
            try:
                noise.read_message_1(self._noise_message)
            except (DecryptFailed, HandshakeFailed):
                raise DomainMismatch(
                    format_fingerprint(self._fingerprint), format_fingerprint(init.fingerprint)
                ) from None
            message, send, recv = noise.write_message_2(b"")
        finally:
            noise.wipe()
        assert noise.handshake_hash is not None
        frame = Frame(CloneType.CLONE_ACCEPT, Writer().bytes16(message).getvalue())
        channel = CloneChannel(
            send, recv, noise.handshake_hash, role="responder",
            sends_objects=init.direction is CloneDirection.RESPONDER_SENDS,
        )
        return frame, channel

    def refuse(self, reason: CloneRefuseReason, detail: str = "") -> Frame:
        """CLONE_REFUSED; after a failed `accept` it carries this side's fingerprint."""
        self._done = True
        self._ephemeral = None
        refusal = CloneRefusal(reason, self._fingerprint, detail)
        return Frame(CloneType.CLONE_REFUSED, refusal.encode())
