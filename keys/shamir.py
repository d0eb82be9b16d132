"""M of N: Shamir secret sharing of a 32-byte key secret over GF(2^8).

Theory of operation
-------------------
Each of the 32 secret bytes is the constant term of its own random polynomial of degree
M-1 over GF(2^8) (the AES field, reduction polynomial x^8+x^4+x^3+x+1).  Share ``i``
(1 <= i <= N) holds the 32 polynomial values at x = i.  Any M shares determine every
polynomial and so the secret (Lagrange interpolation at x = 0); M-1 shares are consistent
with every possible secret with equal probability, so they reveal nothing.  A 1-of-1
"split" is the secret itself.

Coefficients come from `secrets`.  Field arithmetic is table-free: multiplication is a
fixed 8-round shift-and-add with masks instead of branches, inversion is a fixed
exponentiation (a^254), so there are no secret-indexed table look-ups.  (CPython does not
promise constant time, so this narrows timing side channels rather than closing them.)

Why our own code: the maintained candidates do not fit.  ``shamir-mnemonic`` (SLIP-39,
Trezor) is well kept but binds shares to its mnemonic encoding, group scheme and
passphrase encryption; PyCryptodome's ``SecretSharing`` splits only 16-byte secrets over
GF(2^128); the small GF(256) packages on PyPI (pyshamir, sslib, pygfssss, secretsharing)
are single-author and mostly unmaintained.  The project also adds no runtime dependency
beyond trio, cryptography, attrs and pyusb.  This module is ~150 lines and exhaustively
tested (field axioms against an independent reference, round trips for every M, N,
perfect secrecy of M-1 shares for small M).

`combine` refuses, with typed errors naming the share's origin file: no shares, shares of
different keysets, shares disagreeing about M or N, an index outside 1..N, the same index
twice, and fewer than M shares.  Shares beyond the first M are checked to lie on the same
polynomials (`InconsistentShares` otherwise), so a mixed-up or altered share is caught
rather than silently producing a wrong secret.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Sequence

import attrs

from keys.errors import (
    ImageKeysetMismatch,
    InconsistentShares,
    InvalidSplit,
    RepeatedShare,
    TooFewShares,
)

SECRET_SIZE = 32
KEYSET_ID_SIZE = 16
SPLIT_ID_SIZE = 8
MAX_SHARES = 16


def gf_mul(a: int, b: int) -> int:
    """Multiply in GF(2^8) without branches or tables on the operands."""
    r = 0
    for _ in range(8):
        r ^= -(b & 1) & a  # add a when b's low bit is set (mask, not branch)
        a = ((a << 1) & 0xFF) ^ (-(a >> 7) & 0x1B)  # times x, reduce when bit 7 fell out
        b >>= 1
    return r


def gf_inv(a: int) -> int:
    """Inverse in GF(2^8) as a^254 (a fixed chain of squarings); gf_inv(0) == 0."""
    result = 1
    power = a
    for _ in range(7):  # 254 = 0b11111110: multiply in a^2, a^4, ..., a^128
        power = gf_mul(power, power)
        result = gf_mul(result, power)
    return result


@attrs.define(eq=False)
class Share:
    """One share of a split secret.  ``value`` is secret; ``origin`` names its file, if any.

    ``keyset_id`` names the secret (kept when a keyset is reused); ``split_id`` names one
    split of it: a keyset reused with a new M of N has shares of two splits, which do
    not combine with each other.
    """

    keyset_id: bytes = attrs.field(repr=lambda v: v.hex())
    split_id: bytes = attrs.field(repr=lambda v: v.hex())
    m: int
    n: int
    index: int
    value: bytearray = attrs.field(repr=False)
    origin: str | None = None

    def wipe(self) -> None:
        wipe(self.value)


def wipe(buffer: bytearray) -> None:
    """Overwrite a secret buffer with zeros (as far as Python lets us).

    A slice assignment of the same length writes in place (one memmove, no reallocation).
    """
    buffer[:] = bytes(len(buffer))


def check_split(m: int, n: int) -> None:
    if not (isinstance(m, int) and isinstance(n, int) and 1 <= m <= n <= MAX_SHARES):
        raise InvalidSplit(f"M of N must satisfy 1 <= M <= N <= {MAX_SHARES} (got M={m}, N={n})")


def new_keyset_id() -> bytes:
    return secrets.token_bytes(KEYSET_ID_SIZE)


def split(
    secret: bytes | bytearray, m: int, n: int, *, keyset_id: bytes | None = None
) -> list[Share]:
    """Split a 32-byte secret into N shares, any M of which rebuild it.

    All shares carry ``keyset_id`` (a fresh random one when not given) and a fresh
    random ``split_id``.
    """
    check_split(m, n)
    if len(secret) != SECRET_SIZE:
        raise InvalidSplit(f"a key secret is {SECRET_SIZE} bytes (got {len(secret)})")
    if keyset_id is None:
        keyset_id = new_keyset_id()
    if len(keyset_id) != KEYSET_ID_SIZE:
        raise InvalidSplit(f"a keyset id is {KEYSET_ID_SIZE} bytes (got {len(keyset_id)})")
    split_id = secrets.token_bytes(SPLIT_ID_SIZE)
    shares = [
        Share(bytes(keyset_id), split_id, m, n, x, bytearray(SECRET_SIZE)) for x in range(1, n + 1)
    ]
    coefficients = bytearray(m)
    try:
        for pos in range(SECRET_SIZE):
            coefficients[0] = secret[pos]
            coefficients[1:] = secrets.token_bytes(m - 1)
            for share in shares:
                share.value[pos] = _evaluate(coefficients, share.index)
    finally:
        wipe(coefficients)
    return shares


def _evaluate(coefficients: bytearray, x: int) -> int:
    """Horner's rule: c0 + c1 x + ... + c_{m-1} x^{m-1}."""
    y = 0
    for c in reversed(coefficients):
        y = gf_mul(y, x) ^ c
    return y


def _lagrange_weights(xs: Sequence[int], at: int) -> list[int]:
    """Weights w_j with P(at) = sum_j w_j * P(x_j) for any P of degree < len(xs)."""
    weights = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for k, xk in enumerate(xs):
            if k != j:
                num = gf_mul(num, at ^ xk)
                den = gf_mul(den, xj ^ xk)
        weights.append(gf_mul(num, gf_inv(den)))
    return weights


def _interpolate(shares: Sequence[Share], at: int) -> bytearray:
    if len(shares) == 1:
        # One share (M = 1): the polynomials are constants, their value anywhere is the
        # share's value.  A plain copy, as constant-time as the general case.
        return bytearray(shares[0].value)
    weights = _lagrange_weights([s.index for s in shares], at)
    out = bytearray(SECRET_SIZE)
    for pos in range(SECRET_SIZE):
        acc = 0
        for w, share in zip(weights, shares, strict=True):
            acc ^= gf_mul(w, share.value[pos])
        out[pos] = acc
    return out


def _name(share: Share) -> str:
    return share.origin if share.origin is not None else f"share {share.index}"


def check_shares(shares: Sequence[Share]) -> None:
    """Raise the typed error for the first problem that stops `combine`; else return."""
    if not shares:
        raise TooFewShares("no shares were presented; present M keys of the keyset")
    first = shares[0]
    seen: dict[int, Share] = {}
    for share in shares:
        if not hmac.compare_digest(share.keyset_id, first.keyset_id):
            raise ImageKeysetMismatch(
                f"belongs to keyset {share.keyset_id.hex()}, not {first.keyset_id.hex()} "
                f"like {_name(first)}; present keys of one keyset only",
                share.origin,
            )
        if share.split_id != first.split_id:
            raise InconsistentShares(
                f"is from another split of keyset {share.keyset_id.hex()} than "
                f"{_name(first)} (the keyset was reused with a new M of N); present keys "
                "of one split only",
                share.origin,
            )
        if (share.m, share.n) != (first.m, first.n):
            raise InconsistentShares(
                f"says {share.m} of {share.n} but {_name(first)} of the same keyset says "
                f"{first.m} of {first.n}; one of them is damaged",
                share.origin,
            )
        if not 1 <= share.index <= share.n or len(share.value) != SECRET_SIZE:
            raise InconsistentShares(
                f"share index {share.index} is outside 1..{share.n} or its value has the "
                "wrong size; the share is damaged",
                share.origin,
            )
        if share.index in seen:
            raise RepeatedShare(
                f"is share {share.index} of {share.n}, already presented as "
                f"{_name(seen[share.index])}; present a different key of the keyset",
                share.origin,
            )
        seen[share.index] = share
    try:
        check_split(first.m, first.n)
    except InvalidSplit as exc:
        raise InconsistentShares(exc.problem, first.origin) from None
    if len(seen) < first.m:
        raise TooFewShares(
            f"{len(seen)} of the {first.m} shares needed to rebuild keyset "
            f"{first.keyset_id.hex()} were presented; present {first.m - len(seen)} more"
        )


def combine(shares: Iterable[Share]) -> bytearray:
    """Rebuild the secret from at least M distinct shares of one keyset.

    Returns a new bytearray the caller should wipe when done.  With more than M shares,
    every extra share must agree with the first M (`InconsistentShares` otherwise).
    """
    shares = list(shares)
    check_shares(shares)
    m = shares[0].m
    base, extra = shares[:m], shares[m:]
    for share in extra:
        expected = _interpolate(base, share.index)
        try:
            if not hmac.compare_digest(expected, share.value):
                raise InconsistentShares(
                    f"share {share.index} does not agree with the other shares of keyset "
                    f"{share.keyset_id.hex()}; it is damaged or was altered",
                    share.origin,
                )
        finally:
            wipe(expected)
    return _interpolate(base, 0)
