"""CPace (draft-irtf-cfrg-cpace), suite CPACE-X25519-SHA512: the primitives, sans-IO.

Theory of operation
-------------------
CPace is a balanced PAKE: both ends know the same low-entropy secret (here the one-time
password, the *PRS*) and end with the same 64-byte intermediate session key (*ISK*) only
if they used the same password, the same channel identifier (*CI*) and the same session
id (*sid*).  An eavesdropper learns nothing it could test passwords against offline; an
active attacker gets one password guess per run it takes part in.

One run, as the draft writes it (A = the HSM, B = the PED)::

    g  = Elligator2(SHA-512(generator_string(DSI, PRS, CI, sid))[:32])   # a curve point
    Ya = X25519(ya, g)            Yb = X25519(yb, g)                      # ya, yb random
    K  = X25519(ya, Yb) = X25519(yb, Ya)     # all-zero K (a low-order point): abort
    ISK = SHA-512(lv_cat(DSI || "_ISK", sid, K) || lv_cat(Ya, ADa) || lv_cat(Yb, ADb))

The Elligator 2 map is done here with Python integers mod 2^255-19 (a few lines: the
map of RFC 9380 section 6.7.1 on curve25519, Z = 2); every scalar multiplication is
`cryptography`'s X25519, which clamps the scalar and accepts any u-coordinate, so
``X25519(y, u)`` is exactly the draft's ``scalar_mult_vfy``.  Python integers are not
constant-time: the map leaks timing about ``SHA-512(PRS, CI, sid)``, which is fresh for
every run (a new sid) and guarded by the password's tries limit (SECURITY.md).

Only the initiator-responder transcript (``transcript_ir``) is used: the HSM always
speaks first.  Nothing here keeps state or prints a secret; `ped.pake.handshake` is the
session built on top.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ped.errors import RemoteProtocolError

#: The draft's domain-separation identifier of G_X25519.
DSI = b"CPace255"
#: SHA-512's input block size (the draft's H.s_in_bytes).
HASH_BLOCK = 128
FIELD_SIZE = 32
ISK_SIZE = 64
#: The neutral element's encoding (G.I): what a low-order point multiplies to.
NEUTRAL = bytes(FIELD_SIZE)

_P = 2**255 - 19
_A = 486662
_Z = 2  # the smallest non-square of GF(p) (RFC 9380's choice for curve25519)


class InvalidPoint(RemoteProtocolError):
    """The peer's share multiplies to the neutral element (a low-order point): abort."""


def prepend_len(data: bytes) -> bytes:
    """The draft's prepend_len: LEB128 of ``len(data)``, then *data*."""
    length = len(data)
    out = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + bytes(data)


def lv_cat(*parts: bytes) -> bytes:
    """The draft's lv_cat: each part with its length prepended."""
    return b"".join(prepend_len(bytes(p)) for p in parts)


def generator_string(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """lv_cat(DSI, PRS, zero padding, CI, sid): the padding fills SHA-512's first block,
    so the bytes hashed do not depend on a short password's length."""
    zpad = max(0, HASH_BLOCK - 1 - len(prepend_len(prs)) - len(prepend_len(DSI)))
    return lv_cat(DSI, prs, bytes(zpad), ci, sid)


def _inv(x: int) -> int:
    return pow(x, _P - 2, _P)


def elligator2(r: int) -> int:
    """Elligator 2 onto curve25519: field element *r* -> a u-coordinate on the curve."""
    v = (-_A * _inv(1 + _Z * r * r)) % _P
    curve = (v * v * v + _A * v * v + v) % _P
    eps = pow(curve, (_P - 1) // 2, _P)  # Legendre symbol: 1, p-1 (i.e. -1) or 0
    if eps == _P - 1:
        return (-v - _A) % _P
    return v


def decode_u(data: bytes) -> int:
    """RFC 7748 decodeUCoordinate for 255 bits: little endian, the top bit ignored."""
    return int.from_bytes(data, "little") & ((1 << 255) - 1)


def encode_u(u: int) -> bytes:
    return (u % _P).to_bytes(FIELD_SIZE, "little")


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """The password's generator g (32 bytes): Elligator 2 of the hashed generator string."""
    digest = hashlib.sha512(generator_string(prs, ci, sid)).digest()[:FIELD_SIZE]
    return encode_u(elligator2(decode_u(digest)))


def scalar_mult(scalar: bytes | bytearray, point: bytes) -> bytes:
    """X25519(scalar, point), i.e. the draft's scalar_mult_vfy; `InvalidPoint` when the
    result is the neutral element (a low-order *point*)."""
    private = X25519PrivateKey.from_private_bytes(bytes(scalar))
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(bytes(point)))
    except ValueError:  # cryptography refuses an all-zero shared secret
        raise InvalidPoint("the peer's share is a low-order point") from None


def transcript_ir(ya: bytes, ad_a: bytes, yb: bytes, ad_b: bytes) -> bytes:
    """The initiator-responder transcript: lv_cat(Ya, ADa) || lv_cat(Yb, ADb)."""
    return lv_cat(ya, ad_a) + lv_cat(yb, ad_b)


def intermediate_key(sid: bytes, k: bytes, transcript: bytes) -> bytearray:
    """ISK = SHA-512(lv_cat(DSI || "_ISK", sid, K) || transcript), 64 bytes."""
    return bytearray(hashlib.sha512(lv_cat(DSI + b"_ISK", sid, k) + transcript).digest())
