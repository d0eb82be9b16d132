"""Shamir M of N over GF(2^8): field arithmetic, round trips, secrecy, refusals."""

from __future__ import annotations

import itertools
import secrets
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import shamir
from keys.errors import (
    ImageKeysetMismatch,
    InconsistentShares,
    InvalidSplit,
    RepeatedShare,
    TooFewShares,
)
from keys.shamir import Share, combine, gf_inv, gf_mul, split


def reference_mul(a: int, b: int) -> int:
    """Carry-less multiply then reduce by x^8+x^4+x^3+x+1: written independently of gf_mul."""
    product = 0
    for bit in range(8):
        if (b >> bit) & 1:
            product ^= a << bit
    for bit in range(14, 7, -1):
        if (product >> bit) & 1:
            product ^= 0x11B << (bit - 8)
    return product


def test_multiplication_matches_reference_for_all_pairs() -> None:
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == reference_mul(a, b)


def test_known_aes_field_products() -> None:
    # FIPS-197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE


def test_every_nonzero_element_has_its_inverse() -> None:
    assert gf_inv(0) == 0
    for a in range(1, 256):
        assert gf_mul(a, gf_inv(a)) == 1


split_params = st.integers(1, 16).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n)))


@settings(max_examples=120, deadline=None)
@given(params=split_params, secret=st.binary(min_size=32, max_size=32), data=st.data())
def test_any_m_distinct_shares_rebuild_the_secret(
    params: tuple[int, int], secret: bytes, data: st.DataObject
) -> None:
    m, n = params
    shares = split(bytearray(secret), m, n)
    assert [s.index for s in shares] == list(range(1, n + 1))
    assert len({s.keyset_id for s in shares}) == 1
    assert len({s.split_id for s in shares}) == 1
    chosen = data.draw(st.permutations(shares).map(lambda p: p[:m]))
    assert combine(chosen) == secret
    # more than M shares: the extras are checked and the secret is the same
    extra = data.draw(st.integers(m, n))
    assert combine(data.draw(st.permutations(shares))[:extra]) == secret


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_every_subset_of_size_m_rebuilds_for_small_sets(n: int) -> None:
    secret = bytearray(secrets.token_bytes(32))
    for m in range(1, min(n, 4) + 1):
        shares = split(secret, m, n)
        for subset in itertools.islice(itertools.combinations(shares, m), 200):
            assert combine(subset) == secret


def test_one_of_one_is_the_secret_itself() -> None:
    secret = bytearray(secrets.token_bytes(32))
    (share,) = split(secret, 1, 1)
    assert share.value == secret
    assert combine([share]) == secret


def test_one_of_n_shares_are_all_the_secret() -> None:
    secret = bytearray(secrets.token_bytes(32))
    assert all(s.value == secret for s in split(secret, 1, 4))


def test_two_splits_of_one_secret_use_fresh_coefficients() -> None:
    secret = bytearray(secrets.token_bytes(32))
    a = split(secret, 2, 3)
    b = split(secret, 2, 3)
    assert a[0].value != b[0].value
    assert a[0].split_id != b[0].split_id


# --- M-1 shares reveal nothing -------------------------------------------------------------


@pytest.mark.parametrize("x", [1, 2, 7, 16])
def test_one_share_of_two_is_uniform_for_every_secret_byte(x: int) -> None:
    """For M=2 the share byte at x is s + a*x over all 256 coefficients a: each of the 256
    values occurs exactly once, whatever the secret byte s.  So one share is equally
    consistent with every secret byte (perfect secrecy)."""
    for s in range(256):
        values = Counter(shamir._evaluate(bytearray([s, a]), x) for a in range(256))
        assert len(values) == 256 and set(values.values()) == {1}


def test_two_shares_of_three_are_uniform_for_a_secret_byte() -> None:
    """M=3, shares at x=3 and x=9: over all 65536 coefficient pairs each pair of share
    values occurs exactly once, for secret bytes 0 and 0xA5 alike."""
    for s in (0x00, 0xA5):
        seen = set()
        for a1 in range(256):
            for a2 in range(256):
                poly = bytearray([s, a1, a2])
                seen.add((shamir._evaluate(poly, 3), shamir._evaluate(poly, 9)))
        assert len(seen) == 65536


@settings(max_examples=60, deadline=None)
@given(params=split_params.filter(lambda p: p[0] >= 2), candidate=st.integers(0, 255))
def test_m_minus_1_shares_are_consistent_with_any_candidate_secret(
    params: tuple[int, int], candidate: int
) -> None:
    """Given M-1 real shares, a polynomial of degree < M through them and through
    (0, candidate) exists for every candidate byte; its value at the other indices is what
    the remaining shares would then be.  Rebuilding from the M-1 shares plus such a forged
    share yields the candidate, so M-1 shares cannot tell candidates apart."""
    m, n = params
    shares = split(bytearray(secrets.token_bytes(32)), m, n)
    known = shares[: m - 1]
    # interpolate through (0, candidate) and the known shares at the index of shares[m-1]
    target = shares[m - 1].index
    xs = [0] + [s.index for s in known]
    weights = shamir._lagrange_weights(xs, target)
    forged = bytearray(32)
    for pos in range(32):
        acc = gf_mul(weights[0], candidate)
        for w, s in zip(weights[1:], known, strict=True):
            acc ^= gf_mul(w, s.value[pos])
        forged[pos] = acc
    fake = Share(known[0].keyset_id, known[0].split_id, m, n, target, forged)
    assert combine([*known, fake]) == bytes([candidate]) * 32


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(0, 1), (2, 1), (1, 17), (17, 17), (-1, 3)])
def test_out_of_range_split_is_refused(m: int, n: int) -> None:
    with pytest.raises(InvalidSplit, match="1 <= M <= N <= 16"):
        split(bytearray(32), m, n)


def test_wrong_secret_size_is_refused() -> None:
    with pytest.raises(InvalidSplit, match="32 bytes"):
        split(bytearray(31), 1, 1)
    with pytest.raises(InvalidSplit, match="keyset id"):
        split(bytearray(32), 1, 1, keyset_id=b"short")


def named(shares: list[Share]) -> list[Share]:
    for s in shares:
        s.origin = f"key-{s.index}.pedkey"
    return shares


def test_too_few_shares() -> None:
    shares = named(split(bytearray(32), 3, 5))
    with pytest.raises(TooFewShares, match=r"2 of the 3 shares needed.*present 1 more"):
        combine(shares[:2])
    with pytest.raises(TooFewShares, match="no shares"):
        combine([])


def test_repeated_share_names_both_files() -> None:
    shares = named(split(bytearray(32), 2, 3))
    twin = Share(
        shares[0].keyset_id,
        shares[0].split_id,
        2,
        3,
        1,
        bytearray(shares[0].value),
        origin="copy.pedkey",
    )
    with pytest.raises(RepeatedShare) as info:
        combine([shares[0], twin])
    assert info.value.path == "copy.pedkey"
    assert "key-1.pedkey" in str(info.value)


def test_shares_of_different_keysets_are_refused() -> None:
    a = named(split(bytearray(32), 2, 2))
    b = named(split(bytearray(32), 2, 2))
    with pytest.raises(ImageKeysetMismatch, match=f"keyset {b[1].keyset_id.hex()}"):
        combine([a[0], b[1]])


def test_shares_of_different_splits_of_one_keyset_are_refused() -> None:
    secret = bytearray(secrets.token_bytes(32))
    a = named(split(secret, 2, 3))
    b = named(split(secret, 2, 3, keyset_id=a[0].keyset_id))
    with pytest.raises(InconsistentShares, match="another split"):
        combine([a[0], b[1]])


def test_inconsistent_m_or_n_is_refused() -> None:
    shares = named(split(bytearray(32), 2, 3))
    shares[1].m = 3
    with pytest.raises(InconsistentShares, match="says 3 of 3"):
        combine(shares)


def test_index_outside_n_is_refused() -> None:
    shares = named(split(bytearray(32), 2, 3))
    shares[1].index = 4
    with pytest.raises(InconsistentShares, match=r"outside 1\.\.3"):
        combine(shares)


def test_an_altered_extra_share_is_caught() -> None:
    secret = bytearray(secrets.token_bytes(32))
    shares = named(split(secret, 2, 4))
    shares[3].value[5] ^= 1
    assert combine(shares[:2]) == secret
    with pytest.raises(InconsistentShares, match="does not agree") as info:
        combine(shares)
    assert info.value.path == "key-4.pedkey"


def test_share_repr_and_errors_hide_the_value() -> None:
    secret = bytearray(secrets.token_bytes(32))
    shares = named(split(secret, 2, 3))
    for s in shares:
        text = repr(s)
        assert s.value.hex() not in text and "value" not in text
    with pytest.raises(TooFewShares) as info:
        combine(shares[:1])
    for s in shares:
        assert s.value.hex() not in str(info.value)
    assert secret.hex() not in str(info.value)


def test_wipe_zeroes_a_share() -> None:
    (share,) = split(bytearray(b"\x01" * 32), 1, 1)
    share.wipe()
    assert share.value == bytearray(32)


def test_wipe_writes_in_place() -> None:
    buffer = bytearray(b"\xaa" * 176)
    view = memoryview(buffer)  # an export: the buffer cannot be reallocated, only written
    shamir.wipe(buffer)
    assert bytes(view) == bytes(176) and len(buffer) == 176
    view.release()


def test_one_of_n_is_each_share_itself_and_extras_are_checked() -> None:
    secret = bytearray(secrets.token_bytes(32))
    shares = split(secret, 1, 3)
    for share in shares:
        assert share.value == secret  # a 1-of-N "split" is the secret, on every key
        got = combine([share])
        assert got == secret and got is not share.value  # a copy the caller wipes
    assert combine(shares) == secret
    shares[2].value[0] ^= 1
    with pytest.raises(InconsistentShares):
        combine(shares)
