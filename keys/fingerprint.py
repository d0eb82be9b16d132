"""Keyset fingerprint: a short, non-secret name for "this key secret".

    fingerprint = first 8 bytes of SHA-256(b"remote-ped/keyset-fingerprint/v1" || 0x00
                                           || keyset id || key secret)

shown as ``xxxx-xxxx-xxxx-xxxx``.  It lets an administrator compare two keysets (after a
reuse, a duplicate, a restore) without showing either secret.

It is taken over the *key secret*, never over the PIN-derived secret the HSM receives, so
it gives no way to test a PED PIN offline.  Revealing it does not weaken the secret: the
secret has 256 random bits, and it is computed only once M shares are present (M-1 shares
leave 2^256 candidates, far beyond any search).  It is never stored in an image.
"""

from __future__ import annotations

import hashlib

from keys.errors import InvalidSplit
from keys.shamir import KEYSET_ID_SIZE, SECRET_SIZE

FINGERPRINT_DOMAIN = b"remote-ped/keyset-fingerprint/v1"


def keyset_fingerprint(secret: bytes | bytearray, keyset_id: bytes) -> str:
    if len(secret) != SECRET_SIZE or len(keyset_id) != KEYSET_ID_SIZE:
        raise InvalidSplit("a fingerprint needs a 32-byte secret and a 16-byte keyset id")
    h = hashlib.sha256()
    h.update(FINGERPRINT_DOMAIN + b"\x00" + bytes(keyset_id))
    h.update(secret)
    text = h.hexdigest()[:16]
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))
