"""Field codec for message payloads: fixed-width integers and length-prefixed fields.

Every message payload is a fixed sequence of fields written with `Writer` and read back
with `Reader`.  A `Reader` raises `TruncatedFrame` when a field runs past the end,
`FieldOutOfRange` when a value is outside the range its caller allows, and
`TrailingBytes` from `finish()` when bytes are left over.  Errors name the field, never
its content.
"""

from __future__ import annotations

import struct

from ped.errors import FieldOutOfRange, LocalProtocolError, TrailingBytes, TruncatedFrame

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Builds a payload field by field."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        if not 0 <= value <= 0xFF:
            raise LocalProtocolError(f"value {value} does not fit in u8")
        self._parts.append(bytes((value,)))
        return self

    def u16(self, value: int) -> Writer:
        if not 0 <= value <= 0xFFFF:
            raise LocalProtocolError(f"value {value} does not fit in u16")
        self._parts.append(_U16.pack(value))
        return self

    def u32(self, value: int) -> Writer:
        if not 0 <= value <= 0xFFFFFFFF:
            raise LocalProtocolError(f"value {value} does not fit in u32")
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise LocalProtocolError(f"value {value} does not fit in u64")
        self._parts.append(_U64.pack(value))
        return self

    def raw(self, data: bytes | bytearray) -> Writer:
        """Fixed-size bytes whose length the reader knows."""
        self._parts.append(bytes(data))
        return self

    def bytes16(self, data: bytes) -> Writer:
        """Bytes prefixed by a u16 length."""
        if len(data) > 0xFFFF:
            raise LocalProtocolError(f"{len(data)} bytes do not fit a u16-length field")
        self._parts.append(_U16.pack(len(data)))
        self._parts.append(bytes(data))
        return self

    def text16(self, text: str) -> Writer:
        """UTF-8 text prefixed by a u16 byte length."""
        return self.bytes16(text.encode("utf-8"))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads a payload field by field; see module docstring for the errors."""

    def __init__(self, data: bytes, *, what: str = "message") -> None:
        self._data = memoryview(bytes(data))
        self._offset = 0
        self._what = what

    def _take(self, count: int, field: str) -> memoryview:
        end = self._offset + count
        if end > len(self._data):
            raise TruncatedFrame(
                f"{self._what}: field {field!r} needs {count} bytes at offset "
                f"{self._offset} but the payload has {len(self._data)}"
            )
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u8(self, field: str, *, low: int = 0, high: int = 0xFF) -> int:
        return self._check(self._take(1, field)[0], field, low, high)

    def u16(self, field: str, *, low: int = 0, high: int = 0xFFFF) -> int:
        return self._check(_U16.unpack(self._take(2, field))[0], field, low, high)

    def u32(self, field: str, *, low: int = 0, high: int = 0xFFFFFFFF) -> int:
        return self._check(_U32.unpack(self._take(4, field))[0], field, low, high)

    def u64(self, field: str, *, low: int = 0, high: int = 0xFFFFFFFFFFFFFFFF) -> int:
        return self._check(_U64.unpack(self._take(8, field))[0], field, low, high)

    def raw(self, count: int, field: str) -> bytes:
        return bytes(self._take(count, field))

    def bytes16(self, field: str, *, max_len: int = 0xFFFF, min_len: int = 0) -> bytes:
        length = self.u16(f"{field} length")
        if not min_len <= length <= max_len:
            raise FieldOutOfRange(
                f"{self._what}: field {field!r} is {length} bytes; allowed {min_len}-{max_len}"
            )
        return bytes(self._take(length, field))

    def text16(self, field: str, *, max_len: int = 1024, min_len: int = 0) -> str:
        data = self.bytes16(field, max_len=max_len, min_len=min_len)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise FieldOutOfRange(f"{self._what}: field {field!r} is not valid UTF-8") from None

    def remaining(self) -> int:
        return len(self._data) - self._offset

    def finish(self) -> None:
        """Require that every byte was consumed."""
        left = self.remaining()
        if left:
            raise TrailingBytes(f"{self._what}: {left} bytes left after the last field")

    def _check(self, value: int, field: str, low: int, high: int) -> int:
        if not low <= value <= high:
            raise FieldOutOfRange(
                f"{self._what}: field {field!r} is {value}; allowed {low}-{high}"
            )
        return value
