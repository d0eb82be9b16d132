"""Frames: the one envelope every hop of Remote PED uses.

Theory of operation
-------------------
Every byte that moves between an HSM, pedclient, pedserver and a PED device travels in
frames of one format (documented byte for byte in PROTOCOL.md)::

    offset  size  field
    0       2     magic  b"RP"
    2       1     version (WIRE_VERSION)
    3       1     type    (see ped.wire.types)
    4       4     payload length, unsigned big-endian, <= the decoder's maximum
    8       n     payload

Encoding is a pure function.  Decoding is a sans-IO buffer (`FrameDecoder`): feed it
bytes as they arrive, pull complete frames out; it gives `NEED_DATA` until a whole frame
is there.  `NEED_DATA` is the one "feed me more bytes" sentinel of every sans-IO parser
of ours (the link and device connections give it too), never None.  The header is
checked as soon as its eight bytes are in, so a length prefix promising gigabytes is
refused before a single payload byte is buffered, and a decoder never holds more than one
maximum frame.

The decoder is told which frame types its hop accepts; anything else is an
`UnknownFrameType`.  All decoding errors are `RemoteProtocolError`s: the peer sent them.
Encoding errors (a payload we made too big) are `LocalProtocolError`s.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Container
from typing import Final

import attrs

from ped.errors import (
    BadMagic,
    FrameTooLarge,
    LocalProtocolError,
    TrailingBytes,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)

MAGIC = b"RP"
WIRE_VERSION = 1
HEADER = struct.Struct(">2sBBI")
HEADER_SIZE = HEADER.size
#: Hard ceiling for any payload on any hop.  Key secrets are 32 bytes and prompts are
#: short; 64 KiB leaves room for certificates and imprint batches, nothing more.
MAX_PAYLOAD = 64 * 1024


class NeedData(enum.Enum):
    """The type of `NEED_DATA`."""

    NEED_DATA = "need-data"


#: What a sans-IO parser gives when no whole frame is buffered: feed it more bytes first.
NEED_DATA: Final = NeedData.NEED_DATA


@attrs.frozen(repr=False)
class Frame:
    """One frame: a type number and its payload (opaque at this layer)."""

    type: int = attrs.field()
    payload: bytes = attrs.field(converter=bytes)

    @type.validator
    def _check_type(self, _attribute: object, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise LocalProtocolError(f"frame type {value} does not fit in one byte (0-255)")

    def __repr__(self) -> str:
        # Payloads may be ciphertext or, inside a PED, plaintext secrets: never print them.
        return f"Frame(type=0x{self.type:02x}, payload=<{len(self.payload)} bytes>)"


def encode_frame(frame: Frame, *, max_payload: int = MAX_PAYLOAD) -> bytes:
    """Return the bytes of *frame* on the wire."""
    if len(frame.payload) > max_payload:
        raise LocalProtocolError(
            f"frame type 0x{frame.type:02x} payload is {len(frame.payload)} bytes, "
            f"over the {max_payload}-byte maximum; split it or send less"
        )
    return HEADER.pack(MAGIC, WIRE_VERSION, frame.type, len(frame.payload)) + frame.payload


def _check_header(
    header: bytes, accepted: Container[int] | None, max_payload: int
) -> tuple[int, int]:
    magic, version, type_, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise BadMagic(
            f"stream does not start with the Remote PED magic {MAGIC!r} "
            f"(got {magic!r}); is the peer speaking another protocol, or TLS to a TCP port?"
        )
    if version != WIRE_VERSION:
        raise UnsupportedVersion(
            f"frame version {version} is not supported (this side speaks {WIRE_VERSION}); "
            "upgrade the older side"
        )
    if accepted is not None and type_ not in accepted:
        raise UnknownFrameType(f"frame type 0x{type_:02x} is not accepted on this hop")
    if length > max_payload:
        raise FrameTooLarge(
            f"frame type 0x{type_:02x} announces {length} payload bytes, "
            f"over the {max_payload}-byte maximum"
        )
    return type_, length


def decode_frame(
    data: bytes,
    *,
    accepted: Container[int] | None = None,
    max_payload: int = MAX_PAYLOAD,
) -> Frame:
    """Decode exactly one frame from *data*; anything short or left over is an error."""
    if len(data) < HEADER_SIZE:
        raise TruncatedFrame(f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    type_, length = _check_header(bytes(data[:HEADER_SIZE]), accepted, max_payload)
    end = HEADER_SIZE + length
    if len(data) < end:
        raise TruncatedFrame(
            f"frame type 0x{type_:02x} announces {length} payload bytes "
            f"but only {len(data) - HEADER_SIZE} are present"
        )
    if len(data) > end:
        raise TrailingBytes(f"{len(data) - end} bytes follow a complete frame")
    return Frame(type_, bytes(data[HEADER_SIZE:end]))


class FrameDecoder:
    """Sans-IO frame reassembly: `feed` bytes, then call `next_frame` until `NEED_DATA`."""

    def __init__(
        self,
        *,
        accepted: Container[int] | None = None,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        self._buffer = bytearray()
        self._accepted = accepted
        self._max_payload = max_payload
        self._pending: tuple[int, int] | None = None
        self._failed: Exception | None = None

    def feed(self, data: bytes | bytearray) -> None:
        """Add bytes received from the peer."""
        if self._failed is not None:
            raise LocalProtocolError("this frame decoder already failed; close the connection")
        self._buffer += data

    @property
    def buffered(self) -> int:
        """How many bytes are waiting (never more than one frame's worth plus one read)."""
        return len(self._buffer)

    def next_frame(self) -> Frame | NeedData:
        """Return the next complete frame, or `NEED_DATA` until more bytes arrive."""
        if self._failed is not None:
            raise LocalProtocolError("this frame decoder already failed; close the connection")
        try:
            if self._pending is None:
                if len(self._buffer) < HEADER_SIZE:
                    return NEED_DATA
                self._pending = _check_header(
                    bytes(self._buffer[:HEADER_SIZE]), self._accepted, self._max_payload
                )
            type_, length = self._pending
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                return NEED_DATA
            frame = Frame(type_, bytes(self._buffer[HEADER_SIZE:end]))
            del self._buffer[:end]
            self._pending = None
            return frame
        except Exception as exc:
            self._failed = exc
            self._buffer.clear()
            raise

    def check_eof(self) -> None:
        """Call when the peer closed: a partial frame left over is a `TruncatedFrame`."""
        if self._buffer:
            count = len(self._buffer)
            self._buffer.clear()
            raise TruncatedFrame(f"connection closed with {count} bytes of an unfinished frame")
