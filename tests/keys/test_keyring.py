"""Keyring, keysets, imprint, duplicate, erase and the PED's ShareCollector."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keys import keyring as keyring_module
from keys.collector import ShareCollector
from keys.colors import Color
from keys.errors import (
    BlankKey,
    CorruptImage,
    ImageAccessError,
    ImageKeysetMismatch,
    InconsistentShares,
    InvalidPin,
    InvalidSplit,
    MissingImage,
    NotBlank,
    RepeatedShare,
    TooFewBlankKeys,
    TooFewShares,
    WrongImageColor,
)
from keys.fingerprint import keyset_fingerprint
from keys.image import KeyImage, decode, load_image, write_image
from keys.keyring import (
    Keyring,
    duplicate,
    erase,
    fingerprint_of,
    imprint,
    new_keyset,
)
from keys.pin import secret_for_hsm
from keys.shamir import combine


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    r = Keyring(tmp_path / "keys")
    r.add_blanks(6)
    return r


def test_blanks_come_in_numbered_packs(tmp_path: Path) -> None:
    r = Keyring(tmp_path / "new" / "dir")
    first = r.add_blanks(3)
    assert [p.name for p in first] == ["key-001.pedkey", "key-002.pedkey", "key-003.pedkey"]
    assert (tmp_path / "new" / "dir").stat().st_mode & 0o777 == 0o700
    more = r.add_blanks(2)
    assert [p.name for p in more] == ["key-004.pedkey", "key-005.pedkey"]
    assert r.blanks() == first + more
    assert all(e.ok and e.blank for e in r.entries())
    with pytest.raises(TooFewBlankKeys, match="1 to 1000"):
        r.add_blanks(0)


def test_listing_ignores_other_files_and_reports_damaged(ring: Keyring) -> None:
    d = ring.directory
    (d / "notes.txt").write_text("hello")
    (d / ".key-001.pedkey.tmp-abc123").write_bytes(b"partial")
    (d / "sub.pedkey").mkdir()
    (d / "key-002.pedkey").write_bytes(b"\x89PEDKEY\n\x01 truncated")
    entries = ring.entries()
    assert [e.path.name for e in entries] == [f"key-00{i}.pedkey" for i in range(1, 7)]
    (bad,) = ring.damaged()
    assert bad.path.name == "key-002.pedkey" and bad.header is None
    assert "truncated" in str(bad.error) or "interrupted" in str(bad.error)
    assert len(ring.blanks()) == 5


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MissingImage, match="no such key directory"):
        Keyring(tmp_path / "nope").entries()


def test_new_keyset_imprint_find_and_rebuild(ring: Keyring) -> None:
    images = new_keyset(Color.BLACK, "CO", 2, 3, pin_protected=False)
    fingerprint = fingerprint_of(images[:2])
    paths = ring.imprint(images)
    assert [p.name for p in paths] == ["key-001.pedkey", "key-002.pedkey", "key-003.pedkey"]
    found = ring.keys(color=Color.BLACK)
    assert [e.header.index for e in found if e.header] == [1, 2, 3]
    assert ring.keys(color=Color.BLUE) == []
    assert len(ring.keys(keyset_id=images[0].keyset_id)) == 3
    assert len(ring.keys(label="CO")) == 3 and ring.keys(label="SO") == []
    assert list(ring.keysets()) == [images[0].keyset_id]
    assert len(ring.blanks()) == 3
    loaded = [load_image(p) for p in (paths[2], paths[0])]
    assert fingerprint_of(loaded) == fingerprint


def test_imprint_with_too_few_blanks_changes_nothing(ring: Keyring) -> None:
    before = snapshot(ring.directory)
    with pytest.raises(TooFewBlankKeys, match=r"6 blank key.*7 needed.*pedkey blank --count 1"):
        ring.imprint(new_keyset(Color.BLUE, "SO", 7, 7))
    assert snapshot(ring.directory) == before


def test_imprint_create_makes_missing_keys(ring: Keyring) -> None:
    paths = ring.imprint(new_keyset(Color.BLUE, "SO", 4, 8), create=True)
    assert [p.name for p in paths][-2:] == ["key-007.pedkey", "key-008.pedkey"]
    assert len(ring.keys(color=Color.BLUE)) == 8 and ring.blanks() == []


def test_imprint_failure_half_way_rolls_back(
    ring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = keyring_module.write_image
    calls = []

    def flaky(path: Path, image: KeyImage) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise ImageAccessError("cannot write the key image (disk full)", path)
        real(path, image)

    monkeypatch.setattr(keyring_module, "write_image", flaky)
    with pytest.raises(ImageAccessError, match="disk full"):
        ring.imprint(new_keyset(Color.BLACK, "CO", 3, 3))
    assert len(ring.blanks()) == 6


def test_imprint_single_refuses_a_non_blank(ring: Keyring) -> None:
    a, b = new_keyset(Color.BLACK, "CO", 1, 1)[0], new_keyset(Color.BLUE, "SO", 1, 1)[0]
    target = ring.blanks()[0]
    imprint(target, a)
    before = target.read_bytes()
    with pytest.raises(NotBlank, match="holds black key 'CO'"):
        imprint(target, b)
    assert target.read_bytes() == before


def test_duplicate_is_byte_identical(ring: Keyring) -> None:
    src = ring.imprint(new_keyset(Color.BLUE, "SO", 1, 1))[0]
    dest = ring.blanks()[0]
    header = duplicate(src, dest)
    assert header.label == "SO"
    assert dest.read_bytes() == src.read_bytes()


def test_duplicate_refusals_change_nothing(ring: Keyring) -> None:
    src, other = ring.imprint(new_keyset(Color.BLUE, "SO", 2, 2))
    blank = ring.blanks()[0]
    before = snapshot(ring.directory)
    with pytest.raises(NotBlank):
        duplicate(src, other)
    with pytest.raises(BlankKey, match="nothing to duplicate"):
        duplicate(blank, ring.blanks()[1])
    with pytest.raises(NotBlank, match="being duplicated"):
        duplicate(src, src)
    with pytest.raises(MissingImage):
        duplicate(src, ring.directory / "missing.pedkey")
    assert snapshot(ring.directory) == before


def test_erase_turns_a_key_blank(ring: Keyring) -> None:
    path = ring.imprint(new_keyset(Color.WHITE, "Auditor"))[0]
    old = erase(path)
    assert old.color == Color.WHITE
    assert load_image(path).is_blank
    assert erase(path).blank  # erasing a blank is harmless


def test_erase_refuses_a_damaged_image(ring: Keyring) -> None:
    path = ring.blanks()[0]
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptImage, match="not a PED key image"):
        erase(path)
    assert path.read_bytes() == b"garbage"


def test_reused_keyset_keeps_the_secret_and_keyset_id() -> None:
    original = new_keyset(Color.BLUE, "SO", 2, 3)
    shares = [img.share() for img in original[:2]]
    secret = combine(shares)
    again = new_keyset(Color.BLUE, "SO", 3, 5, secret=secret, keyset_id=original[0].keyset_id)
    assert secret != bytearray(32)  # the caller's buffer is not wiped by new_keyset
    assert fingerprint_of(again[:3]) == fingerprint_of(original[:2])
    assert again[0].keyset_id == original[0].keyset_id
    assert again[0].header.split_id != original[0].header.split_id
    c = ShareCollector(Color.BLUE)
    c.add(original[0])
    with pytest.raises(InconsistentShares, match="another split"):
        c.add(again[1])


def test_new_keyset_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidSplit):
        new_keyset(Color.BLUE, "SO", 3, 2)
    with pytest.raises(InvalidSplit):
        new_keyset(Color.BLUE, "SO", 1, 1, secret=b"short")
    with pytest.raises(ValueError, match="label"):
        new_keyset(Color.BLUE, "", 1, 1)


# --- ShareCollector: a login on the PED -----------------------------------------------------


def test_collector_happy_path_with_pin() -> None:
    images = new_keyset(Color.BLACK, "CO", 3, 5, pin_protected=True)
    c = ShareCollector(Color.BLACK, keyset_id=images[0].keyset_id)
    assert c.remaining is None and not c.complete
    assert c.add(images[4]) == 2
    assert c.pin_protected and c.header is not None and c.header.m == 3
    assert c.add(images[0]) == 1
    with pytest.raises(TooFewShares):
        c.secret()
    assert c.add(images[2]) == 0 and c.complete
    assert c.indices == [5, 1, 3]
    secret = c.secret()
    assert c.fingerprint() == keyset_fingerprint(secret, images[0].keyset_id)
    assert c.secret_for_hsm("1234") == secret_for_hsm(secret, images[0].keyset_id, "1234")
    assert c.secret_for_hsm("1235") != c.secret_for_hsm("1234")
    with pytest.raises(InvalidPin, match="enter the PIN"):
        c.secret_for_hsm(None)
    with pytest.raises(RepeatedShare, match="already in"):
        c.add(images[1])
    c.wipe()
    assert c.remaining is None


def test_collector_without_pin_hands_the_key_secret() -> None:
    secret = bytearray(os.urandom(32))
    (image,) = new_keyset(Color.ORANGE, "RPV", secret=secret)
    c = ShareCollector(Color.ORANGE)
    assert c.add(image) == 0
    assert c.secret_for_hsm(None) == secret
    with pytest.raises(InvalidPin, match="no PED PIN"):
        c.secret_for_hsm("1234")


def test_collector_refusals_add_nothing() -> None:
    images = new_keyset(Color.BLACK, "CO", 2, 3)
    other = new_keyset(Color.BLACK, "CO", 2, 3)
    c = ShareCollector(Color.BLACK)
    with pytest.raises(BlankKey, match="present a black key"):
        c.add(KeyImage.blank())
    with pytest.raises(WrongImageColor, match="is a blue key; present a black key"):
        c.add(new_keyset(Color.BLUE, "SO")[0])
    assert c.remaining is None
    c.add(images[0])
    with pytest.raises(ImageKeysetMismatch, match=images[0].keyset_id.hex()):
        c.add(other[1])
    with pytest.raises(RepeatedShare, match="duplicate of a key"):
        c.add(decode(images[0].to_bytes()))  # the same key again, as another object
    assert c.remaining == 1 and c.indices == [1]
    c.add(images[1])
    assert c.complete


def test_collector_expected_keyset() -> None:
    images = new_keyset(Color.BLUE, "SO")
    c = ShareCollector(Color.BLUE, keyset_id=bytes(16))
    with pytest.raises(ImageKeysetMismatch, match="not the expected"):
        c.add(images[0])


def test_collector_same_index_different_share() -> None:
    a = new_keyset(Color.BLACK, "CO", 2, 2, keyset_id=b"k" * 16)
    image = a[0]
    forged = KeyImage(image.header, bytearray(32))
    c = ShareCollector(Color.BLACK)
    c.add(image)
    with pytest.raises(RepeatedShare, match="same share index"):
        c.add(forged)


def test_collector_repr_shows_no_secret() -> None:
    images = new_keyset(Color.BLACK, "CO", 1, 1)
    c = ShareCollector(Color.BLACK)
    c.add(images[0])
    assert images[0].share().value.hex() not in repr(c)
    assert repr(c) == "<ShareCollector black 1 of 1 shares>"


def test_write_image_path_roundtrip_via_keyring(ring: Keyring) -> None:
    path = ring.blanks()[0]
    write_image(path, new_keyset(Color.PURPLE, "Recovery")[0])
    (entry,) = ring.keys(color=Color.PURPLE)
    assert entry.path == path and entry.header is not None and entry.header.label == "Recovery"
