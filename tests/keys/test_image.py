"""Key image format: round trips, layout, integrity (every byte), truncation, files."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.colors import Color
from keys.errors import (
    BlankKey,
    CorruptImage,
    ImageAccessError,
    InvalidLabel,
    KeyImageError,
    MissingImage,
    TamperedImage,
    TruncatedImage,
    UnsupportedImageVersion,
)
from keys.image import (
    IMAGE_SIZE,
    MAGIC,
    KeyHeader,
    KeyImage,
    decode,
    encode,
    load_image,
    read_header,
    write_image,
)
from keys.keyring import new_keyset
from keys.shamir import split


def a_key(pin: bool = True, label: str = "Partition SO") -> KeyImage:
    return new_keyset(Color.BLUE, label, 2, 3, pin, created=1_700_000_000)[1]


def test_round_trip_imprinted() -> None:
    image = a_key()
    data = image.to_bytes()
    assert len(data) == IMAGE_SIZE == 176
    back = decode(data)
    assert back.header == image.header
    assert back.same_share(image)
    assert back.share().value == image.share().value
    h = back.header
    assert (h.color, h.label, h.m, h.n, h.index, h.pin_protected, h.created) == (
        Color.BLUE,
        "Partition SO",
        2,
        3,
        2,
        True,
        1_700_000_000,
    )


def test_round_trip_blank() -> None:
    blank = KeyImage.blank(created=5)
    back = decode(blank.to_bytes())
    assert back.is_blank and back.header == KeyHeader(blank=True, created=5)
    with pytest.raises(BlankKey):
        back.share()


@pytest.mark.parametrize("label", ["x", "HSM SO", "Zoë's key", "é" * 32])
def test_labels_round_trip(label: str) -> None:
    assert decode(a_key(label=label).to_bytes()).label == label


@pytest.mark.parametrize("label", ["", " lead", "trail ", "a\nb", "é" * 33, "x" * 65])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(InvalidLabel):
        a_key(label=label)


def test_layout_is_as_documented() -> None:
    image = a_key()
    data = bytes(image.to_bytes())
    assert data[:8] == MAGIC == b"\x89PEDKEY\n"
    version, kind, color, flags, m, n, index, label_len = data[8:16]
    assert (version, kind, color, flags, m, n, index, label_len) == (1, 1, 1, 1, 2, 3, 2, 12)
    assert struct.unpack(">Q", data[16:24])[0] == 1_700_000_000
    assert data[24:40] == image.keyset_id
    assert data[40:48] == image.header.split_id
    assert data[48:60] == b"Partition SO" and data[60:112] == bytes(52)
    assert data[112:144] == image.share().value
    assert data[144:] == hashlib.sha256(data[:144]).digest()


def test_every_single_byte_change_is_detected() -> None:
    original = bytes(a_key().to_bytes())
    for pos in range(len(original)):
        for flip in (0x01, 0x80, 0xFF):
            data = bytearray(original)
            data[pos] ^= flip
            with pytest.raises(CorruptImage) as info:
                decode(data, "k.pedkey")
            err = info.value
            if pos < 8:
                assert "magic" in err.problem
            elif pos == 8:
                assert isinstance(err, UnsupportedImageVersion)
            else:
                assert isinstance(err, TamperedImage)
            assert err.path == "k.pedkey"


def test_every_byte_of_a_blank_is_protected_too() -> None:
    original = bytes(KeyImage.blank().to_bytes())
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 0x10
        with pytest.raises(CorruptImage):
            decode(data)


def test_every_truncation_is_detected() -> None:
    original = bytes(a_key().to_bytes())
    for size in range(len(original)):
        with pytest.raises(TruncatedImage, match=r"truncat|interrupted|empty"):
            decode(original[:size], "k.pedkey")


def test_appended_bytes_are_refused() -> None:
    with pytest.raises(CorruptImage, match="appended"):
        decode(bytes(a_key().to_bytes()) + b"\n")


def test_not_an_image() -> None:
    with pytest.raises(CorruptImage, match="not a PED key image"):
        decode(b"hello world, this is a text file" * 6)


def forge(data: bytearray, pos: int, value: int) -> bytearray:
    """Change a field and recompute the (unkeyed) digest, as a forger could."""
    data[pos] = value
    data[144:] = hashlib.sha256(data[:144]).digest()
    return data


@pytest.mark.parametrize(
    ("pos", "value", "match"),
    [
        (9, 7, "unknown image kind"),
        (10, 9, "out of range"),
        (11, 0x02, "unknown flag"),
        (12, 4, "out of range|outside|M of N"),
        (14, 0, "outside"),
        (15, 70, "label"),
    ],
)
def test_valid_digest_but_impossible_fields_are_corrupt(pos: int, value: int, match: str) -> None:
    with pytest.raises(CorruptImage, match=match):
        decode(forge(a_key().to_bytes(), pos, value))


def test_blank_with_key_material_is_corrupt() -> None:
    data = KeyImage.blank().to_bytes()
    with pytest.raises(CorruptImage, match="blank"):
        decode(forge(data, 120, 1))


def test_the_digest_is_not_a_secret_key_so_a_forger_can_recompute_it() -> None:
    """Documented limit: integrity, not authenticity.  A recomputed digest loads."""
    data = forge(a_key().to_bytes(), 112, 0x42)
    assert decode(data).header.color == Color.BLUE


def test_repr_and_str_never_show_the_share() -> None:
    image = a_key()
    share = image.share().value
    for text in (repr(image), str(image), repr(image.header)):
        assert share.hex() not in text
        assert repr(bytes(share)) not in text
        assert "keyset" in text or "KeyHeader" in text
    assert "Partition SO" in repr(image)


def test_wipe_clears_the_share() -> None:
    image = a_key()
    image.wipe()
    assert image.share().value == bytearray(32)


# --- files ----------------------------------------------------------------------------------


def test_write_and_load(tmp_path: Path) -> None:
    image = a_key()
    path = tmp_path / "k.pedkey"
    write_image(path, image)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = load_image(path)
    assert back.path == str(path) and back.same_share(image)
    assert back.share().origin == str(path)
    assert read_header(path) == image.header


def test_write_replaces_and_keeps_0600_even_with_a_lax_umask(tmp_path: Path) -> None:
    path = tmp_path / "k.pedkey"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old = os.umask(0)
    try:
        write_image(path, KeyImage.blank())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_image(path).is_blank


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MissingImage, match="no such key image") as info:
        load_image(tmp_path / "nope.pedkey")
    assert info.value.path == str(tmp_path / "nope.pedkey")
    with pytest.raises(ImageAccessError, match="directory"):
        load_image(tmp_path)
    big = tmp_path / "big.pedkey"
    big.write_bytes(bytes(a_key().to_bytes()) + bytes(10_000))
    with pytest.raises(CorruptImage, match="appended"):
        load_image(big)
    empty = tmp_path / "empty.pedkey"
    empty.write_bytes(b"")
    with pytest.raises(TruncatedImage, match="empty"):
        load_image(empty)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k.pedkey"
    write_image(path, a_key())

    real_open = os.open

    def denied(file: str | os.PathLike[str], *args: Any, **kwargs: Any) -> int:
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    # root reads any file whatever its mode, so simulate the refusal at open()
    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(ImageAccessError, match="permission denied") as info:
        load_image(path)
    assert info.value.path == str(path)


def test_write_into_a_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ImageAccessError, match="directory does not exist"):
        write_image(tmp_path / "no" / "k.pedkey", a_key())


def test_every_error_is_a_key_image_error_with_one_line() -> None:
    with pytest.raises(KeyImageError) as info:
        decode(b"\x89PEDKEY\n\x01" + bytes(5), "a.pedkey")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("a.pedkey: ")


def test_a_share_from_split_makes_an_image() -> None:
    (share,) = split(bytearray(b"\x07" * 32), 1, 1)
    image = KeyImage.imprinted(share, Color.ORANGE, "RPV")
    assert image.header.describe() == "orange key 'RPV'"
    assert decode(encode(image.header, image.share().value)).same_share(image)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_only_ever_raise_key_image_errors(data: bytes) -> None:
    try:
        decode(data)
    except KeyImageError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=IMAGE_SIZE - 32 - 8, max_size=IMAGE_SIZE - 32 - 8),
)
def test_any_body_with_a_valid_digest_decodes_or_is_corrupt(data: bytes) -> None:
    """Even a forger who recomputes the digest only gets a valid image or CorruptImage."""
    body = bytearray(MAGIC + b"\x01" + data[1:])
    body += hashlib.sha256(body).digest()
    try:
        image = decode(body)
    except CorruptImage:
        return
    assert decode(image.to_bytes()).header == image.header


@settings(max_examples=100, deadline=None)
@given(
    color=st.sampled_from(list(Color)),
    label=st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=16
    ),
    params=st.integers(1, 16).flatmap(
        lambda n: st.tuples(st.integers(1, n), st.just(n), st.integers(1, n))
    ),
    pin=st.booleans(),
    created=st.integers(0, 2**64 - 1),
    value=st.binary(min_size=32, max_size=32),
)
def test_header_round_trip(
    color: Color,
    label: str,
    params: tuple[int, int, int],
    pin: bool,
    created: int,
    value: bytes,
) -> None:
    m, n, index = params
    header = KeyHeader(
        blank=False,
        created=created,
        color=color,
        label=label,
        keyset_id=bytes(range(16)),
        split_id=bytes(8),
        m=m,
        n=n,
        index=index,
        pin_protected=pin,
    )
    image = decode(encode(header, bytearray(value)))
    assert image.header == header
    assert image.share().value == value
    assert value.hex() not in repr(image)
    assert isinstance(header.created_iso, str)
