"""ARCHITECTURE.md's formula of ``keys.secret_for_hsm`` is what the code computes."""

from __future__ import annotations

import hashlib

from keys.pin import secret_for_hsm
from tests.ped.vectors.blocks import REPO

SECRET = bytes(range(0xC0, 0xE0))
KEYSET = bytes(range(0xA0, 0xB0))
FORMULA = (
    '`scrypt(password = secret || PIN digits (ASCII), salt =\n"remote-ped/ped-pin/v1" || 0x00 '
    "|| keyset_id, N = 2^15, r = 8, p = 1, length = 32)`"
)


def test_architecture_states_the_formula() -> None:
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert FORMULA in text
    assert "without a PIN\nthe key secret itself" in text


def test_the_formula_is_the_code() -> None:
    by_formula = hashlib.scrypt(
        SECRET + b"1234",
        salt=b"remote-ped/ped-pin/v1" + b"\x00" + KEYSET,
        n=2**15,
        r=8,
        p=1,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    assert secret_for_hsm(bytearray(SECRET), KEYSET, "1234") == by_formula
    assert secret_for_hsm(bytearray(SECRET), KEYSET, None) == SECRET
