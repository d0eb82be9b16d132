"""Noise protocol framework primitives for ``Noise_NNpsk0_25519_ChaChaPoly_SHA256``.

Theory of operation
-------------------
This module is a direct transcription of the Noise specification (revision 34), sections
5.1 (CipherState), 5.2 (SymmetricState), 4.3 (HKDF), 9 (pre-shared keys), restricted to
the one suite Remote PED uses: X25519, ChaCha20-Poly1305 (IETF, 96-bit nonce = 32 zero
bits || 64-bit little-endian counter), SHA-256.  The handshake pattern is::

    NNpsk0:
      -> psk, e
      <- e, ee

`NNpsk0Initiator` and `NNpsk0Responder` run that pattern; `ped.channel.handshake` puts
them into frames.  The cryptographic primitives come from ``cryptography``; HMAC-SHA256
from the standard library (same OpenSSL underneath).

Key material (chaining key, cipher keys, PSK, DH outputs) is held in ``bytearray``s and
zeroed by ``wipe()``.  Python cannot promise that no copy survives (``cryptography``
copies keys into OpenSSL, ``bytes`` are immutable), so wiping narrows the window rather
than closing it; the X25519 private keys are dropped as soon as they have been used.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ped.channel.errors import DecryptFailed, HandshakeFailed, NonceExhausted
from ped.errors import LocalProtocolError

PROTOCOL_NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
HASHLEN = 32
DHLEN = 32
KEYLEN = 32
TAGLEN = 16
#: Noise reserves nonce 2**64 - 1 (spec 5.1); a CipherState refuses to use it.
MAX_NONCE = 2**64 - 1
#: Noise limits every message, handshake or transport, to 65535 bytes (spec 3).
NOISE_MAX_MESSAGE = 65535


def wipe(buffer: bytearray | None) -> None:
    """Zero a bytearray in place (no-op for None)."""
    if buffer is not None:
        buffer[:] = bytes(len(buffer))


def _hmac(key: bytes | bytearray, data: bytes | bytearray) -> bytearray:
    return bytearray(hmac.new(bytes(key), bytes(data), hashlib.sha256).digest())


def noise_hkdf(
    chaining_key: bytes | bytearray, ikm: bytes | bytearray, outputs: int
) -> list[bytearray]:
    """HKDF as Noise defines it (spec 4.3): 2 or 3 outputs of HASHLEN bytes."""
    if outputs not in (2, 3):
        raise LocalProtocolError("Noise HKDF produces 2 or 3 outputs")
    temp_key = _hmac(chaining_key, ikm)
    out1 = _hmac(temp_key, b"\x01")
    out2 = _hmac(temp_key, out1 + b"\x02")
    result = [out1, out2]
    if outputs == 3:
        result.append(_hmac(temp_key, out2 + b"\x03"))
    wipe(temp_key)
    return result


def nonce_bytes(n: int) -> bytes:
    """ChaChaPoly nonce for counter *n*: 4 zero bytes then n as 64-bit little-endian."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: X25519PrivateKey, public: bytes) -> bytearray:
    """X25519 shared secret; a low-order peer key (all-zero result) fails the handshake."""
    try:
        return bytearray(private.exchange(X25519PublicKey.from_public_bytes(public)))
    except ValueError:
        raise HandshakeFailed(
            "the peer's ephemeral public key is invalid (low order point); "
            "the handshake was altered in transit"
        ) from None


class CipherState:
    """Noise CipherState: a key and a counter nonce.  Empty (no key) passes data through."""

    def __init__(self, key: bytes | bytearray | None = None) -> None:
        self._key: bytearray | None = None
        self._aead: ChaCha20Poly1305 | None = None
        self.n = 0
        if key is not None:
            if len(key) != KEYLEN:
                raise LocalProtocolError(f"cipher key must be {KEYLEN} bytes")
            self._key = bytearray(key)
            self._aead = ChaCha20Poly1305(bytes(self._key))

    def __repr__(self) -> str:
        return f"CipherState(has_key={self.has_key()}, n={self.n})"

    def has_key(self) -> bool:
        return self._aead is not None

    def key_copy(self) -> bytearray:
        """A copy of the key, for test vectors only (the caller wipes it)."""
        if self._key is None:
            raise LocalProtocolError("this cipher state has no key")
        return bytearray(self._key)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | bytearray) -> bytes:
        if self._aead is None:
            return bytes(plaintext)
        if self.n >= MAX_NONCE:
            raise NonceExhausted(
                "this channel has used every nonce; open a new session to get fresh keys"
            )
        # No bytes() copy: the caller may wipe its bytearray once this returns.
        ciphertext = self._aead.encrypt(nonce_bytes(self.n), plaintext, bytes(ad))
        self.n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return bytes(ciphertext)
        if self.n >= MAX_NONCE:
            raise NonceExhausted(
                "this channel has received every nonce; open a new session to get fresh keys"
            )
        try:
            plaintext = self._aead.decrypt(nonce_bytes(self.n), bytes(ciphertext), bytes(ad))
        except InvalidTag:
            raise DecryptFailed(
                f"a {len(ciphertext)}-byte message failed authentication "
                "(tampered, replayed, reordered or truncated)"
            ) from None
        self.n += 1
        return plaintext

    def wipe(self) -> None:
        wipe(self._key)
        self._key = None
        self._aead = None


class SymmetricState:
    """Noise SymmetricState (spec 5.2)."""

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self.h = bytes(h)
        self.ck = bytearray(h)
        self.cipher = CipherState()

    def __repr__(self) -> str:
        return "SymmetricState(<keys hidden>)"

    def mix_hash(self, data: bytes | bytearray) -> None:
        self.h = hashlib.sha256(self.h + bytes(data)).digest()

    def _replace_ck(self, new_ck: bytearray) -> None:
        wipe(self.ck)
        self.ck = new_ck

    def _replace_cipher(self, key: bytearray) -> None:
        self.cipher.wipe()
        self.cipher = CipherState(key[:KEYLEN])
        wipe(key)

    def mix_key(self, ikm: bytes | bytearray) -> None:
        ck, temp_k = noise_hkdf(self.ck, ikm, 2)
        self._replace_ck(ck)
        self._replace_cipher(temp_k)

    def mix_key_and_hash(self, ikm: bytes | bytearray) -> None:
        ck, temp_h, temp_k = noise_hkdf(self.ck, ikm, 3)
        self._replace_ck(ck)
        self.mix_hash(temp_h)
        wipe(temp_h)
        self._replace_cipher(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = noise_hkdf(self.ck, b"", 2)
        c1, c2 = CipherState(k1[:KEYLEN]), CipherState(k2[:KEYLEN])
        wipe(k1)
        wipe(k2)
        return c1, c2

    def wipe(self) -> None:
        wipe(self.ck)
        self.cipher.wipe()


class _NNpsk0Base:
    def __init__(
        self, psk: bytes | bytearray, prologue: bytes, ephemeral: X25519PrivateKey | None
    ) -> None:
        if len(psk) != 32:
            raise LocalProtocolError("the Noise PSK must be 32 bytes")
        self._psk = bytearray(psk)
        self._e: X25519PrivateKey | None = ephemeral or X25519PrivateKey.generate()
        self._re: bytes | None = None
        self.ss = SymmetricState()
        self.ss.mix_hash(prologue)
        #: Set after the handshake: the Noise handshake hash (channel binding, not secret).
        self.handshake_hash: bytes | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<keys hidden>)"

    def _mix_psk(self) -> None:
        self.ss.mix_key_and_hash(self._psk)
        wipe(self._psk)

    def _mix_remote_e(self, message: bytes) -> None:
        if len(message) < DHLEN + TAGLEN:
            raise HandshakeFailed(
                f"handshake message is {len(message)} bytes, shorter than the "
                f"{DHLEN + TAGLEN} an ephemeral key and a tag need"
            )
        self._re = bytes(message[:DHLEN])
        self.ss.mix_hash(self._re)
        self.ss.mix_key(self._re)  # psk modifier: every "e" is also mixed into the key

    def _write_e(self) -> bytes:
        assert self._e is not None
        e_pub = public_bytes(self._e)
        self.ss.mix_hash(e_pub)
        self.ss.mix_key(e_pub)
        return e_pub

    def _mix_ee(self) -> None:
        assert self._e is not None and self._re is not None
        shared = dh(self._e, self._re)
        self.ss.mix_key(shared)
        wipe(shared)
        self._e = None  # forward secrecy: the ephemeral private key is not needed again

    def _finish(self) -> tuple[CipherState, CipherState]:
        c1, c2 = self.ss.split()
        self.handshake_hash = self.ss.h
        self.ss.wipe()
        return c1, c2

    def wipe(self) -> None:
        wipe(self._psk)
        self.ss.wipe()
        self._e = None


class NNpsk0Initiator(_NNpsk0Base):
    """The initiator (HSM) half of NNpsk0."""

    def write_message_1(self, payload: bytes = b"") -> bytes:
        self._mix_psk()
        e_pub = self._write_e()
        return e_pub + self.ss.encrypt_and_hash(payload)

    def read_message_2(self, message: bytes) -> tuple[bytes, CipherState, CipherState]:
        """Return (payload, send cipher, receive cipher)."""
        self._mix_remote_e(message)
        self._mix_ee()
        payload = self.ss.decrypt_and_hash(bytes(message[DHLEN:]))
        c1, c2 = self._finish()
        return payload, c1, c2


class NNpsk0Responder(_NNpsk0Base):
    """The responder (PED) half of NNpsk0."""

    def read_message_1(self, message: bytes) -> bytes:
        self._mix_psk()
        self._mix_remote_e(message)
        return self.ss.decrypt_and_hash(bytes(message[DHLEN:]))

    def write_message_2(self, payload: bytes = b"") -> tuple[bytes, CipherState, CipherState]:
        """Return (message, send cipher, receive cipher)."""
        e_pub = self._write_e()
        self._mix_ee()
        message = e_pub + self.ss.encrypt_and_hash(payload)
        c1, c2 = self._finish()
        return message, c2, c1
