"""Keyrings and helpers shared by the device tests."""

from __future__ import annotations

import secrets
from pathlib import Path

import attrs
import pytest

from keys import Keyring, new_keyset, secret_for_hsm
from keys.colors import Color


@attrs.frozen
class Ring:
    """A keyring directory made for a test, and what the HSM side knows about it."""

    path: Path
    rpv: bytes
    so_secret: bytes
    so_keyset: bytes
    so_pin: str
    pin_file: Path

    def so_expected(self) -> bytearray:
        return secret_for_hsm(bytearray(self.so_secret), self.so_keyset, self.so_pin)


def make_ring(path: Path, *, m: int = 2, n: int = 3, blanks: int = 3) -> Ring:
    """Orange RPV key (1 of 1), a blue SO keyset (M of N, PED PIN), a red key, blanks."""
    path.mkdir(parents=True, exist_ok=True)
    ring = Keyring(path)
    rpv = secrets.token_bytes(32)
    so_secret = secrets.token_bytes(32)
    ring.imprint(new_keyset(Color.ORANGE, "RPV", 1, 1, secret=rpv), create=True)
    so_images = new_keyset(Color.BLUE, "HSM SO", m, n, True, secret=so_secret)
    ring.imprint(so_images, create=True)
    ring.imprint(new_keyset(Color.RED, "domain", 1, 1), create=True)
    if blanks:
        ring.add_blanks(blanks)
    pin_file = path.parent / f"{path.name}-pins.txt"
    pin_file.write_text("# PED PINs\nHSM SO = 246813\nCO = 1357\n")
    keyset = so_images[0].keyset_id
    assert keyset is not None
    return Ring(path, rpv, so_secret, keyset, "246813", pin_file)


def key_of(ring: Ring, color: Color, index: int = 1, keyset: bytes | None = None) -> Path:
    for entry in Keyring(ring.path).keys(color, keyset):
        assert entry.header is not None
        if entry.header.index == index:
            return entry.path
    raise AssertionError(f"no {color.label} key {index} in {ring.path}")


@pytest.fixture
def ring(tmp_path: Path) -> Ring:
    return make_ring(tmp_path / "keys")
