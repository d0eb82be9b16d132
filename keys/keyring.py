"""A directory of key images, and the operations a PED performs on keys.

Theory of operation
-------------------
A directory stands for the PED's key slot plus the operator's pile of keys: each
``*.pedkey`` file in it is one physical key, blank or imprinted.  (Temporary files left by
a crash, ``.NAME.tmp-XXXX``, and other files are ignored.)

* `Keyring` lists the images with their headers, finds blanks, and finds the keys of a
  colour or a keyset.  Listing never fails on one bad file: a damaged image is an entry
  with an ``error``.
* `new_keyset` makes the N images of a fresh (or reused) secret in memory; `imprint` and
  `Keyring.imprint` write them on blank keys.  Every write is atomic (`keys.atomic`).
* `duplicate` copies an imprinted image byte for byte onto a blank key: the copy is
  indistinguishable from the original, as the HSM cannot tell how many copies exist.
* `erase` turns a key back into a blank.
* The PED's side of a login (collecting presented shares) is `keys.collector`.

Operations check before they write, so an error changes no file; the check and the write
happen under the directory's write lock (`keys.lock`), so a PED and ``pedkey`` working on
one directory cannot both take the same blank.  A multi-key imprint that fails half-way
(a disk error) turns the keys it already wrote back into blanks.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from keys.atomic import is_temp_name
from keys.colors import Color
from keys.errors import (
    BlankKey,
    KeyImageError,
    MissingImage,
    NotBlank,
    TooFewBlankKeys,
)
from keys.fingerprint import keyset_fingerprint
from keys.image import (
    IMAGE_SUFFIX,
    KeyHeader,
    KeyImage,
    load_image,
    read_header,
    validate_label,
    write_image,
)
from keys.lock import directory_lock
from keys.shamir import SECRET_SIZE, check_split, combine, new_keyset_id, split, wipe

MAX_BLANKS_PER_CALL = 1000
_NUMBERED = re.compile(r"^key-(\d+)\.pedkey$")


@attrs.frozen(eq=False)
class KeyEntry:
    """One file of a key directory: its header, or the error that stops reading it."""

    path: Path
    header: KeyHeader | None
    error: KeyImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def blank(self) -> bool:
        return self.header is not None and self.header.blank


class Keyring:
    """The key images in one directory (not recursive), sorted by file name."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"Keyring({str(self.directory)!r})"

    def paths(self) -> list[Path]:
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            raise MissingImage("no such key directory", self.directory) from None
        except NotADirectoryError:
            raise MissingImage("is not a directory", self.directory) from None
        except OSError as exc:
            raise MissingImage(
                f"cannot list the key directory ({exc.strerror})", self.directory
            ) from None
        out = []
        for name in names:
            if not name.endswith(IMAGE_SUFFIX) or is_temp_name(name):
                continue
            path = self.directory / name
            if path.is_file():
                out.append(path)
        return out

    def entries(self) -> list[KeyEntry]:
        entries = []
        for path in self.paths():
            try:
                entries.append(KeyEntry(path, read_header(path)))
            except KeyImageError as exc:
                entries.append(KeyEntry(path, None, exc))
        return entries

    def blanks(self) -> list[Path]:
        return [e.path for e in self.entries() if e.ok and e.blank]

    def damaged(self) -> list[KeyEntry]:
        return [e for e in self.entries() if not e.ok]

    def keys(
        self,
        color: Color | None = None,
        keyset_id: bytes | None = None,
        label: str | None = None,
    ) -> list[KeyEntry]:
        """Imprinted, readable keys, optionally of one colour / keyset / label."""
        found = []
        for e in self.entries():
            h = e.header
            if h is None or h.blank:
                continue
            if color is not None and h.color != color:
                continue
            if keyset_id is not None and h.keyset_id != keyset_id:
                continue
            if label is not None and h.label != label:
                continue
            found.append(e)
        return found

    def keysets(self) -> dict[bytes, list[KeyEntry]]:
        groups: dict[bytes, list[KeyEntry]] = {}
        for e in self.keys():
            assert e.header is not None and e.header.keyset_id is not None
            groups.setdefault(e.header.keyset_id, []).append(e)
        return groups

    def new_paths(self, count: int) -> list[Path]:
        """``count`` unused names key-NNN.pedkey, numbered after the highest in use."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            names = []
        highest = 0
        for name in names:
            match = _NUMBERED.match(name)
            if match:
                highest = max(highest, int(match.group(1)))
        width = max(3, len(str(highest + count)))
        return [
            self.directory / f"key-{i:0{width}d}{IMAGE_SUFFIX}"
            for i in range(highest + 1, highest + count + 1)
        ]

    def add_blanks(self, count: int, *, created: int | None = None) -> list[Path]:
        """Create ``count`` new blank key files (the directory is made, 0700, if missing)."""
        if not 1 <= count <= MAX_BLANKS_PER_CALL:
            raise TooFewBlankKeys(f"count must be 1 to {MAX_BLANKS_PER_CALL} (got {count})")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise MissingImage(
                f"cannot create the key directory ({exc.strerror})", self.directory
            ) from None
        blank = KeyImage.blank(created)
        with directory_lock(self.directory):
            paths = self.new_paths(count)
            written: list[Path] = []
            try:
                for path in paths:
                    write_image(path, blank)
                    written.append(path)
            except KeyImageError:
                for path in written:
                    with contextlib.suppress(OSError):
                        path.unlink()
                raise
        return paths

    def imprint(self, images: Sequence[KeyImage], *, create: bool = False) -> list[Path]:
        """Write ``images`` on the directory's blank keys (in name order).

        With too few blanks: `TooFewBlankKeys` and nothing written, unless ``create`` is true,
        in which case the missing keys are new files.  Returns the paths written, in the
        order of ``images``.
        """
        if create:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise MissingImage(
                    f"cannot create the key directory ({exc.strerror})", self.directory
                ) from None
        with directory_lock(self.directory):
            blanks = self.blanks()
            if len(blanks) < len(images):
                if not create:
                    raise TooFewBlankKeys(
                        f"{len(blanks)} blank key(s) here, {len(images)} needed; add blanks "
                        f"with 'pedkey blank --count {len(images) - len(blanks)} --dir "
                        f"{self.directory}'",
                        self.directory,
                    )
                blanks += self.new_paths(len(images) - len(blanks))
            targets = blanks[: len(images)]
            written: list[Path] = []
            try:
                for path, image in zip(targets, images, strict=True):
                    write_image(path, image)
                    written.append(path)
            except KeyImageError:
                _rollback(written)
                raise
        return targets


def _rollback(paths: Iterable[Path]) -> None:
    blank = KeyImage.blank()
    for path in paths:
        with contextlib.suppress(KeyImageError):
            write_image(path, blank)


# --- keysets ------------------------------------------------------------------------------


def new_keyset(
    color: Color,
    label: str,
    m: int = 1,
    n: int = 1,
    pin_protected: bool = False,
    secret: bytes | bytearray | None = None,
    *,
    keyset_id: bytes | None = None,
    created: int | None = None,
) -> list[KeyImage]:
    """The N images of a keyset, in memory (index 1..N).

    ``secret`` None makes a fresh random 32-byte secret; pass the secret (and keyset id)
    read from an existing key to *reuse* a keyset, e.g. to give several HSMs one SO key.
    A reused keyset must keep its keyset id: the PIN derivation is salted with it.
    """
    color = Color(color)
    validate_label(label)
    check_split(m, n)
    # Work on our own copy so the caller's buffer stays theirs to wipe.
    material = bytearray(secrets.token_bytes(SECRET_SIZE)) if secret is None else bytearray(secret)
    try:
        shares = split(material, m, n, keyset_id=keyset_id or new_keyset_id())
    finally:
        wipe(material)
    try:
        return [
            KeyImage.imprinted(s, color, label, pin_protected=pin_protected, created=created)
            for s in shares
        ]
    finally:
        for s in shares:
            s.wipe()


def fingerprint_of(images: Sequence[KeyImage]) -> str:
    """Combine M images of one keyset and return its fingerprint (the secret is wiped)."""
    shares = [img.share() for img in images]
    try:
        secret = combine(shares)
    finally:
        for s in shares:
            s.wipe()
    try:
        assert images[0].keyset_id is not None
        return keyset_fingerprint(secret, images[0].keyset_id)
    finally:
        wipe(secret)


# --- single-key operations ---------------------------------------------------------------


def imprint(path: str | os.PathLike[str], image: KeyImage) -> None:
    """Write ``image`` on the blank key at ``path``; `NotBlank` if it holds a key."""
    with directory_lock(_parent(path)):
        current = load_image(path)
        current.wipe()
        if not current.is_blank:
            raise NotBlank(
                f"holds {current.header.describe()}; erase it first or use a blank key", path
            )
        write_image(path, image)


def duplicate(src: str | os.PathLike[str], blank_dest: str | os.PathLike[str]) -> KeyHeader:
    """Copy the imprinted key at ``src`` onto the blank key at ``blank_dest``, byte for byte."""
    if os.path.abspath(src) == os.path.abspath(blank_dest):
        raise NotBlank("is the key being duplicated; choose another blank key", blank_dest)
    source = load_image(src)
    try:
        if source.is_blank:
            raise BlankKey("is a blank key; there is nothing to duplicate", src)
        imprint(blank_dest, source)
        return source.header
    finally:
        source.wipe()


def erase(path: str | os.PathLike[str], *, created: int | None = None) -> KeyHeader:
    """Turn the (readable) key at ``path`` into a blank; returns the header it had."""
    with directory_lock(_parent(path)):
        current = load_image(path)
        current.wipe()
        if not current.is_blank:
            write_image(path, KeyImage.blank(created))
    return current.header


def _parent(path: str | os.PathLike[str]) -> Path:
    """The directory to lock for ``path``; a missing one reads as a missing image."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise MissingImage("no such key image file (its directory does not exist)", path)
    return parent


__all__ = [
    "KeyEntry",
    "Keyring",
    "duplicate",
    "erase",
    "fingerprint_of",
    "imprint",
    "new_keyset",
]
