"""PED key images: the file that stands in for a physical PED key.

Format, version 1 (fixed size, 176 bytes, integers big-endian)::

    off  size  field
      0     8  magic  89 50 45 44 4B 45 59 0A  ("\\x89PEDKEY\\n": binary, catches text-mode
                                               copies and line-ending conversion)
      8     1  format version = 1
      9     1  kind: 0 = blank, 1 = imprinted
     10     1  colour code (keys.colors.Color; 0 when blank)
     11     1  flags: bit 0 = protected by a PED PIN; other bits must be 0
     12     1  M (shares needed)            } 1 <= M <= N <= 16, 1 <= index <= N;
     13     1  N (shares in the keyset)     } all 0 when blank
     14     1  share index
     15     1  label length in bytes (1..64; 0 when blank)
     16     8  creation time, seconds since the Unix epoch (UTC): imprint or blanking time
     24    16  keyset id (random; names the secret: kept by duplicates and by a reuse)
     40     8  split id (random; names one M-of-N split: shares of different splits of a
               reused keyset do not combine)
     48    64  label, UTF-8, zero padded
    112    32  the secret share (zeros when blank)
    144    32  SHA-256 of bytes 0..143

Every image has the same size, so a short file is `TruncatedImage` and any changed byte
is `TamperedImage` (or `CorruptImage` when the magic itself is hit, or
`UnsupportedImageVersion` when the version byte is); the size also hides the label length.

What the digest promises: it detects corruption and tampering by anyone who does not
recompute it.  It is **not** an authenticity claim: images are not keyed (a MAC needs a
key the PED does not have), so whoever can write the file can forge a consistent one.
The real check is the HSM's: a forged or altered secret fails the login there.

A key image is a secret, like the physical key it stands for: whoever has the file can
read the share (and with M shares, the key secret).  Files are written 0600, atomically
(`keys.atomic`), and `KeyImage`'s repr, like every error, never shows the share.  Erasing
replaces the file with a blank image; the old bytes may survive in free disk blocks, so
keep key directories on encrypted storage (or destroy the medium, as with a real key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from datetime import UTC, datetime
from typing import ClassVar

import attrs

from keys.atomic import atomic_write
from keys.colors import Color
from keys.errors import (
    BlankKey,
    CorruptImage,
    ImageAccessError,
    InvalidLabel,
    InvalidSplit,
    MissingImage,
    TamperedImage,
    TruncatedImage,
    UnsupportedImageVersion,
)
from keys.shamir import (
    KEYSET_ID_SIZE,
    MAX_SHARES,
    SECRET_SIZE,
    SPLIT_ID_SIZE,
    Share,
    check_split,
    wipe,
)

MAGIC = b"\x89PEDKEY\n"
FORMAT_VERSION = 1
KIND_BLANK = 0
KIND_KEY = 1
FLAG_PIN = 0x01
LABEL_MAX_BYTES = 64
IMAGE_SUFFIX = ".pedkey"

_FIXED = struct.Struct(">8sBBBBBBBBQ16s8s64s32s")
_BODY_SIZE = _FIXED.size  # 144
#: The fields before the share: what `decode` unpacks, in place (the share is never
#: copied into an immutable bytes).
_HEAD = struct.Struct(">8sBBBBBBBBQ16s8s64s")
_SHARE_OFFSET = _HEAD.size  # 112
DIGEST_SIZE = 32
IMAGE_SIZE = _BODY_SIZE + DIGEST_SIZE  # 176


def validate_label(label: str) -> str:
    """Labels are 1 to 64 bytes of printable UTF-8 without surrounding spaces."""
    if not isinstance(label, str) or not label:
        raise InvalidLabel("a key label must not be empty; give a short name such as 'HSM SO'")
    if len(label.encode("utf-8")) > LABEL_MAX_BYTES:
        raise InvalidLabel(f"a key label is at most {LABEL_MAX_BYTES} bytes of UTF-8")
    if not label.isprintable() or label != label.strip():
        raise InvalidLabel(
            "a key label holds printable characters only, without leading or trailing spaces"
        )
    return label


@attrs.frozen
class KeyHeader:
    """Everything about a key image except the secret share.  Safe to print and log."""

    blank: bool
    created: int
    color: Color | None = None
    label: str = ""
    keyset_id: bytes | None = attrs.field(
        default=None, repr=lambda v: "None" if v is None else f"'{v.hex()}'"
    )
    split_id: bytes | None = attrs.field(
        default=None, repr=lambda v: "None" if v is None else f"'{v.hex()}'"
    )
    m: int = 0
    n: int = 0
    index: int = 0
    pin_protected: bool = False
    version: int = FORMAT_VERSION

    @property
    def keyset_hex(self) -> str:
        return self.keyset_id.hex() if self.keyset_id is not None else ""

    @property
    def created_iso(self) -> str:
        try:
            return datetime.fromtimestamp(self.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (ValueError, OverflowError, OSError):
            return f"{self.created} (seconds since 1970; beyond the calendar)"

    def describe(self) -> str:
        """One line for people: 'black key 'CO', share 2 of 3 (2 needed), PED PIN'."""
        if self.blank or self.color is None:
            return "blank key"
        pin = ", PED PIN" if self.pin_protected else ""
        split = "" if self.n == 1 else f", share {self.index} of {self.n} ({self.m} needed)"
        return f"{self.color.label} key {self.label!r}{split}{pin}"


class KeyImage:
    """A key image: a `KeyHeader` plus the secret share (hidden from repr, wipeable).

    Build one with `KeyImage.blank()` or `KeyImage.imprinted(share, color, label, ...)`,
    read one with `load_image`, write it with `write_image`.  ``path`` is where it was
    read from (None for images made in memory); errors and shares name it.
    """

    __slots__ = ("_share", "header", "path")
    __hash__: ClassVar[None] = None  # type: ignore[assignment]

    def __init__(
        self,
        header: KeyHeader,
        share: bytearray | None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        _validate_header(header)
        if header.blank:
            if share is not None and any(share):
                raise CorruptImage("a blank key image carries no share", path)
            share = bytearray(SECRET_SIZE)
        elif share is None or len(share) != SECRET_SIZE:
            raise InvalidSplit(f"a key share is {SECRET_SIZE} bytes")
        self.header = header
        self._share = bytearray(share)
        self.path = None if path is None else os.fspath(path)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def blank(cls, created: int | None = None) -> KeyImage:
        return cls(KeyHeader(blank=True, created=_now(created)), None)

    @classmethod
    def imprinted(
        cls,
        share: Share,
        color: Color,
        label: str,
        *,
        pin_protected: bool = False,
        created: int | None = None,
    ) -> KeyImage:
        header = KeyHeader(
            blank=False,
            created=_now(created),
            color=Color(color),
            label=validate_label(label),
            keyset_id=bytes(share.keyset_id),
            split_id=bytes(share.split_id),
            m=share.m,
            n=share.n,
            index=share.index,
            pin_protected=bool(pin_protected),
        )
        return cls(header, share.value)

    # --- access ---------------------------------------------------------------------

    @property
    def is_blank(self) -> bool:
        return self.header.blank

    @property
    def color(self) -> Color | None:
        return self.header.color

    @property
    def label(self) -> str:
        return self.header.label

    @property
    def keyset_id(self) -> bytes | None:
        return self.header.keyset_id

    def share(self) -> Share:
        """A copy of the secret share (wipe it when done); `BlankKey` for a blank image."""
        h = self.header
        if h.blank or h.keyset_id is None or h.split_id is None:
            raise BlankKey("is a blank key; present an imprinted key", self.path)
        return Share(
            h.keyset_id, h.split_id, h.m, h.n, h.index, bytearray(self._share), origin=self.path
        )

    def same_share(self, other: KeyImage) -> bool:
        """True when both images hold the same keyset, index and share (constant-time)."""
        return (
            self.header.keyset_id == other.header.keyset_id
            and self.header.split_id == other.header.split_id
            and self.header.index == other.header.index
            and hmac.compare_digest(self._share, other._share)
        )

    def to_bytes(self) -> bytearray:
        """The encoded image (holds the share: wipe it when done)."""
        return encode(self.header, self._share)

    def wipe(self) -> None:
        wipe(self._share)

    def __del__(self) -> None:
        # The image owns a private copy of its share: wipe it before the memory is reused.
        share = getattr(self, "_share", None)
        if share is not None:
            wipe(share)

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        keyset = f", keyset {self.header.keyset_hex}" if not self.header.blank else ""
        return f"<KeyImage {self.header.describe()}{keyset}{where}>"

    __str__ = __repr__


def _now(created: int | None) -> int:
    return int(time.time()) if created is None else int(created)


def _validate_header(h: KeyHeader) -> None:
    if h.version != FORMAT_VERSION:
        raise UnsupportedImageVersion(f"cannot write format version {h.version}")
    if not 0 <= h.created < 2**64:
        raise InvalidSplit("creation time out of range")
    if h.blank:
        if (
            h.color is not None
            or h.label
            or h.keyset_id is not None
            or h.split_id is not None
            or h.m
            or h.n
            or h.index
        ):
            raise CorruptImage("a blank key image has no colour, label, keyset or split")
        if h.pin_protected:
            raise CorruptImage("a blank key image has no PED PIN")
        return
    if h.color is None or h.keyset_id is None or h.split_id is None:
        raise InvalidSplit("an imprinted key needs a colour, a keyset id and a split id")
    if type(h.color) is not Color:
        Color(h.color)  # (a Color is one already: skip the enum lookup)
    validate_label(h.label)
    if len(h.keyset_id) != KEYSET_ID_SIZE or len(h.split_id) != SPLIT_ID_SIZE:
        raise InvalidSplit(f"a keyset id is {KEYSET_ID_SIZE} bytes, a split id {SPLIT_ID_SIZE}")
    check_split(h.m, h.n)
    if not 1 <= h.index <= h.n:
        raise InvalidSplit(f"share index {h.index} is outside 1..{h.n}")


# --- encoding -----------------------------------------------------------------------------


def encode(header: KeyHeader, share: bytearray) -> bytearray:
    """Serialise to the version-1 layout; the result holds the share (caller wipes)."""
    _validate_header(header)
    label = header.label.encode("utf-8")
    body = bytearray(_BODY_SIZE)
    _FIXED.pack_into(
        body,
        0,
        MAGIC,
        FORMAT_VERSION,
        KIND_BLANK if header.blank else KIND_KEY,
        0 if header.color is None else int(header.color),
        FLAG_PIN if header.pin_protected else 0,
        header.m,
        header.n,
        header.index,
        len(label),
        header.created,
        header.keyset_id or bytes(KEYSET_ID_SIZE),
        header.split_id or bytes(SPLIT_ID_SIZE),
        label,
        bytes(SECRET_SIZE),  # the share is copied in below, never via an immutable bytes
    )
    body[_BODY_SIZE - SECRET_SIZE : _BODY_SIZE] = share
    body += hashlib.sha256(body).digest()
    return body


def decode(
    data: bytes | bytearray | memoryview, path: str | os.PathLike[str] | None = None
) -> KeyImage:
    """Parse and check an image.  Order: size/magic/version, digest, then field values."""
    view = memoryview(data)
    if len(view) < len(MAGIC) + 1:
        if len(view) == 0:
            raise TruncatedImage(
                "the file is empty; not a PED key image (or its copy failed)", path
            )
        if bytes(view[: len(MAGIC)]) == MAGIC[: len(view)]:
            raise TruncatedImage(
                f"only {len(view)} of {IMAGE_SIZE} bytes; the copy was interrupted or the file "
                "is damaged",
                path,
            )
        raise CorruptImage("not a PED key image (wrong magic bytes)", path)
    if view[: len(MAGIC)] != MAGIC:
        raise CorruptImage("not a PED key image (wrong magic bytes)", path)
    version = view[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise UnsupportedImageVersion(
            f"key image format version {version} is not supported (this software reads "
            f"version {FORMAT_VERSION}); the file is damaged or was written by a newer pedkey",
            path,
        )
    if len(view) < IMAGE_SIZE:
        raise TruncatedImage(
            f"only {len(view)} of {IMAGE_SIZE} bytes; the copy was interrupted or the file is "
            "damaged",
            path,
        )
    if len(view) > IMAGE_SIZE:
        raise CorruptImage(
            f"{len(view)} bytes where a key image has {IMAGE_SIZE}; extra data was appended", path
        )
    digest = hashlib.sha256(view[:_BODY_SIZE]).digest()
    if not hmac.compare_digest(digest, view[_BODY_SIZE:]):
        raise TamperedImage(
            "integrity check failed (SHA-256 mismatch): the file was altered or damaged; "
            "use a duplicate of this key",
            path,
        )
    (
        _,
        _,
        kind,
        color,
        flags,
        m,
        n,
        index,
        label_len,
        created,
        keyset_id,
        split_id,
        label_raw,
    ) = _HEAD.unpack_from(view)
    share = bytearray(view[_SHARE_OFFSET:_BODY_SIZE])
    try:
        if flags & ~FLAG_PIN:
            raise CorruptImage(f"unknown flag bits 0x{flags:02x}", path)
        if label_len > LABEL_MAX_BYTES or any(label_raw[label_len:]):
            raise CorruptImage("label field is malformed", path)
        if kind == KIND_BLANK:
            if (
                color
                or flags
                or m
                or n
                or index
                or label_len
                or any(keyset_id)
                or any(split_id)
                or any(share)
            ):
                raise CorruptImage("a blank image with non-zero key fields", path)
            return KeyImage(KeyHeader(blank=True, created=created), None, path)
        if kind != KIND_KEY:
            raise CorruptImage(f"unknown image kind {kind}", path)
        try:
            header = KeyHeader(
                blank=False,
                created=created,
                color=_COLORS.get(color) or Color(color),
                label=label_raw[:label_len].decode("utf-8"),
                keyset_id=keyset_id,
                split_id=split_id,
                m=m,
                n=n,
                index=index,
                pin_protected=bool(flags & FLAG_PIN),
            )
            return KeyImage(header, share, path)
        except (ValueError, UnicodeDecodeError) as exc:
            problem = exc.problem if hasattr(exc, "problem") else "a field is out of range"
            raise CorruptImage(f"invalid key image: {problem}", path) from None
    finally:
        wipe(share)


_COLORS = {int(c): c for c in Color}


# --- files --------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str]) -> KeyImage:
    """Read and verify a key image file.  Raises a `KeyImageError` naming the file."""
    buf = bytearray(IMAGE_SIZE + 1)  # one byte more than an image, to see trailing data
    try:
        return decode(memoryview(buf)[: _read_into(path, buf)], path)
    finally:
        wipe(buf)  # on every path: a read that failed half-way may hold part of a share


def _read_into(path: str | os.PathLike[str], buf: bytearray) -> int:
    """Fill *buf* from the file at *path*; the number of bytes read."""
    try:
        # os-level: no file object, and readv fills our (wipeable) bytearray.  A directory
        # opens read-only and fails at the read (IsADirectoryError), as with open().
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.readv(fd, [buf])
            while 0 < size < len(buf):  # short read: read on until the end of the file
                got = os.readv(fd, [memoryview(buf)[size:]])
                if not got:
                    break
                size += got
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise MissingImage("no such key image file", path) from None
    except IsADirectoryError:
        raise ImageAccessError("is a directory, not a key image", path) from None
    except PermissionError:
        raise ImageAccessError("permission denied reading the key image", path) from None
    except OSError as exc:
        raise ImageAccessError(f"cannot read the key image ({exc.strerror})", path) from None
    return size


def read_header(path: str | os.PathLike[str]) -> KeyHeader:
    """Verify an image file and return its header; the share is wiped at once."""
    image = load_image(path)
    image.wipe()
    return image.header


def write_image(path: str | os.PathLike[str], image: KeyImage) -> None:
    """Write ``image`` to ``path`` atomically with mode 0600 (replacing any file there)."""
    data = image.to_bytes()
    try:
        atomic_write(path, data)
    except FileNotFoundError:
        raise ImageAccessError("its directory does not exist", path) from None
    except PermissionError:
        raise ImageAccessError("permission denied writing the key image", path) from None
    except OSError as exc:
        raise ImageAccessError(f"cannot write the key image ({exc.strerror})", path) from None
    finally:
        wipe(data)


__all__ = [
    "FORMAT_VERSION",
    "IMAGE_SIZE",
    "IMAGE_SUFFIX",
    "MAGIC",
    "MAX_SHARES",
    "KeyHeader",
    "KeyImage",
    "decode",
    "encode",
    "load_image",
    "read_header",
    "validate_label",
    "write_image",
]
