"""Key derivation, wrapping and sealing for the emulated HSM.

Theory of operation
-------------------
The HSM never stores a role's PED secret.  The 32-byte secret the PED derives from a key
(its PIN and M of N already folded in by the PED) goes through HKDF-SHA256 into a
key-encryption key (KEK), and the KEK unwraps (AES-256-GCM) the *role key*: the random key
that encrypts what that role owns.  A wrong key or a wrong PIN gives a wrong secret, hence a
wrong KEK, hence an authentication-tag failure: that is a failed login.  Nothing else is
compared, so there is nothing to brute-force offline but AES-GCM itself.

What the HSM must remember while unpowered (its RPV, an auto-activation cache) is *sealed*
under the device master key: a file in the HSM's home that stands for the battery-backed
key of a real HSM.  Every wrap carries associated data naming what it is and where it
belongs, so a blob moved from one role or partition to another fails to open.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hsm.errors import HsmError, StateCorrupt

KEY_SIZE = 32
NONCE_SIZE = 12
_SALT = b"pedhsm/v1 kek"
MASTER_KEY_FILE = "device.key"


class UnwrapFailed(HsmError):
    """A wrapped key did not open: the secret that should open it is not the right one."""

    code = "unwrap-failed"


def wipe(buf: bytearray | None) -> None:
    """Overwrite a secret held in a bytearray (best effort in Python)."""
    if buf is not None:
        for i in range(len(buf)):
            buf[i] = 0


def random_key() -> bytearray:
    return bytearray(secrets.token_bytes(KEY_SIZE))


def derive_kek(secret: bytes | bytearray, purpose: str, *extra: bytes | bytearray) -> bytearray:
    """KEK for *purpose* from a PED secret (and, for application logins, a challenge)."""
    material = bytearray(secret)
    for part in extra:
        # Length-prefixed so that (a, bc) and (ab, c) never give the same input.
        material += len(part).to_bytes(4, "big") + bytes(part)
    try:
        out = HKDF(
            algorithm=hashes.SHA256(), length=KEY_SIZE, salt=_SALT, info=purpose.encode()
        ).derive(bytes(material))
        return bytearray(out)
    finally:
        wipe(material)


def wrap(kek: bytes | bytearray, key: bytes | bytearray, aad: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_SIZE)
    return nonce + AESGCM(bytes(kek)).encrypt(nonce, bytes(key), aad.encode())


def unwrap(kek: bytes | bytearray, blob: bytes, aad: str) -> bytearray:
    if len(blob) < NONCE_SIZE + 16:
        raise UnwrapFailed("wrapped key is truncated")
    try:
        plain = AESGCM(bytes(kek)).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad.encode())
    except InvalidTag:
        raise UnwrapFailed("the secret does not open this key") from None
    return bytearray(plain)


class MasterKey:
    """The device key (stands for the battery-backed key of a real HSM)."""

    def __init__(self, key: bytearray) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    @classmethod
    def load_or_create(cls, home: Path) -> MasterKey:
        path = home / MASTER_KEY_FILE
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(KEY_SIZE))
                os.fsync(fd)
            finally:
                os.close(fd)
        data = path.read_bytes()
        if len(data) != KEY_SIZE:
            raise StateCorrupt(
                f"device key {path} has {len(data)} bytes, expected {KEY_SIZE}; "
                "the HSM cannot open its sealed state (restore the file or start a new home)"
            )
        return cls(bytearray(data))

    def seal(self, purpose: str, data: bytes | bytearray) -> bytes:
        return wrap(self.subkey("seal"), data, purpose)

    def unseal(self, purpose: str, blob: bytes) -> bytearray:
        return unwrap(self.subkey("seal"), blob, purpose)

    def subkey(self, purpose: str) -> bytearray:
        return derive_kek(self._key, f"pedhsm/v1 device {purpose}")

    def wipe(self) -> None:
        wipe(self._key)
