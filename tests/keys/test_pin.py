"""PED PIN: validation, the scrypt derivation, no-PIN keys, PIN files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import pytest

from keys.colors import Color
from keys.errors import InvalidPin, InvalidSplit, PinFileError
from keys.image import KeyImage
from keys.keyring import new_keyset
from keys.pin import (
    PIN_DOMAIN,
    derive_pin_secret,
    parse_pin_file,
    pin_for_label,
    read_pin_file,
    secret_for_hsm,
    validate_pin,
)

SECRET = bytearray(range(32))
KEYSET = bytes(range(100, 116))
PIN = "80417325"


@pytest.mark.parametrize("pin", ["0000", "1234", "9" * 48, "0123456789"])
def test_valid_pins(pin: str) -> None:
    assert validate_pin(pin) == pin


@pytest.mark.parametrize("pin", ["", "123", "9" * 49, "12a4", "12 34", "١٢٣٤", "+1234", "-123"])
def test_invalid_pins_are_refused_without_echo(pin: str) -> None:
    with pytest.raises(InvalidPin) as info:
        validate_pin(pin)
    if pin.strip():
        assert pin not in str(info.value)
    assert "4 to 48" in str(info.value)


def test_derivation_matches_an_independent_scrypt() -> None:
    """Known answer computed with the standard library's scrypt, not cryptography's."""
    expected = hashlib.scrypt(
        bytes(SECRET) + PIN.encode(),
        salt=PIN_DOMAIN + b"\x00" + KEYSET,
        n=2**15,
        r=8,
        p=1,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )
    derived = derive_pin_secret(SECRET, KEYSET, PIN)
    assert isinstance(derived, bytearray)
    assert derived == expected


def test_wrong_pin_gives_a_different_secret_and_the_same_pin_the_same() -> None:
    right = secret_for_hsm(SECRET, KEYSET, PIN)
    assert secret_for_hsm(SECRET, KEYSET, PIN) == right
    assert secret_for_hsm(SECRET, KEYSET, "80417326") != right
    assert secret_for_hsm(SECRET, KEYSET, "080417325") != right
    assert right != SECRET


def test_the_keyset_id_salts_the_derivation() -> None:
    other = bytes(16)
    assert derive_pin_secret(SECRET, KEYSET, PIN) != derive_pin_secret(SECRET, other, PIN)


def test_no_pin_hands_a_copy_of_the_secret() -> None:
    out = secret_for_hsm(SECRET, KEYSET, None)
    assert out == SECRET and out is not SECRET
    out[0] ^= 1
    assert SECRET[0] == 0


def test_bad_inputs() -> None:
    with pytest.raises(InvalidSplit):
        secret_for_hsm(bytearray(31), KEYSET, None)
    with pytest.raises(InvalidSplit):
        secret_for_hsm(SECRET, b"short", PIN)
    with pytest.raises(InvalidPin):
        secret_for_hsm(SECRET, KEYSET, "12")


def test_no_pin_dependent_value_is_stored_in_an_image() -> None:
    """The image bytes of a PIN-protected keyset do not depend on the PIN: it is not an
    input to imprinting at all, only the flag is stored.  Check the flag is all there is:
    a protected and an unprotected image of one share differ in the flag and digest only."""
    protected = new_keyset(Color.BLACK, "CO", 1, 1, True, SECRET, keyset_id=KEYSET, created=1)[0]
    plain = KeyImage(attrs.evolve(protected.header, pin_protected=False), protected.share().value)
    a = bytes(protected.to_bytes())
    b = bytes(plain.to_bytes())
    differing = [i for i in range(len(a)) if a[i] != b[i]]
    assert differing[0] == 11  # the flags byte
    assert all(i >= 144 for i in differing[1:])  # and the digest


# --- PIN files ------------------------------------------------------------------------------


def test_pin_file_with_labels_and_comments() -> None:
    pins = parse_pin_file("# admins\n\nHSM SO = 1234\n  CO=567890  \nodd = label = 4444\n")
    assert pins == {"HSM SO": "1234", "CO": "567890", "odd = label": "4444"}
    assert pin_for_label(pins, "CO") == "567890"
    with pytest.raises(PinFileError, match="no PIN for label 'CU'"):
        pin_for_label(pins, "CU", "pins.txt")


def test_pin_file_with_one_bare_pin() -> None:
    pins = parse_pin_file("246813\n")
    assert pin_for_label(pins, "anything") == "246813"


def test_labelled_line_wins_over_bare_pin() -> None:
    pins = parse_pin_file("1111\nCO = 2222\n")
    assert pin_for_label(pins, "CO") == "2222"
    assert pin_for_label(pins, "SO") == "1111"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("CO = 12\n", "line 1: a PED PIN is 4 to 48"),
        ("# c\nCO = 12ab34\n", "line 2: a PED PIN holds digits"),
        ("= 1234\n", "line 1: no label"),
        ("CO = 1234\nCO = 5678\n", "line 2: label 'CO' is given twice"),
        ("# nothing\n", "holds no PIN"),
    ],
)
def test_malformed_pin_files(text: str, match: str) -> None:
    with pytest.raises(PinFileError, match=match) as info:
        parse_pin_file(text, "pins.txt")
    assert info.value.path == "pins.txt"
    for secret_like in ("12ab34", "5678"):
        assert secret_like not in str(info.value)


def test_read_pin_file(tmp_path: Path) -> None:
    path = tmp_path / "pins"
    path.write_text("CO = 13572468\n")
    assert read_pin_file(path) == {"CO": "13572468"}
    with pytest.raises(PinFileError, match="does not exist"):
        read_pin_file(tmp_path / "missing")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(PinFileError, match="not UTF-8"):
        read_pin_file(path)
    path.write_bytes(b"1" * 70_000)
    with pytest.raises(PinFileError, match="larger than"):
        read_pin_file(path)
