"""The p11-kit RPC primitives: big-endian integers, byte arrays, flagged arrays, strings.

p11-kit encodes a CK_ULONG as 8 bytes, a length or count as 4, a byte array as a 4-byte
length (0xffffffff: a NULL pointer) and its bytes; an "ay" field of a call carries a
presence byte first (0: no array, only a 4-byte length follows).  Every read checks the
bytes are there before it takes them; nothing is allocated from a length field before
the check.
"""

from __future__ import annotations

import struct

from hsmclient.p11kit.errors import MalformedMessage

NULL_LENGTH = 0xFFFFFFFF
#: p11-kit refuses byte arrays of 0x7fffffff bytes or more; so do we.
MAX_ARRAY = 0x7FFFFFFF

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Reader:
    """Reads fields from one message body; every shortfall is a `MalformedMessage`."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._data = memoryview(data)
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.offset

    def _take(self, count: int, what: str) -> memoryview:
        if count < 0 or count > self.remaining:
            raise MalformedMessage(
                f"{what}: needs {count} bytes, {self.remaining} left at offset {self.offset}"
            )
        view = self._data[self.offset : self.offset + count]
        self.offset += count
        return view

    def byte(self, what: str = "byte") -> int:
        return self._take(1, what)[0]

    def u32(self, what: str = "uint32") -> int:
        value: int = _U32.unpack(self._take(4, what))[0]
        return value

    def u64(self, what: str = "ulong") -> int:
        value: int = _U64.unpack(self._take(8, what))[0]
        return value

    def array(self, what: str = "byte array") -> bytes | None:
        """A byte array: a 4-byte length and the bytes; None for p11-kit's NULL marker."""
        length = self.u32(what)
        if length == NULL_LENGTH:
            return None
        if length >= MAX_ARRAY:
            raise MalformedMessage(f"{what}: length {length} over p11-kit's limit")
        return bytes(self._take(length, what))

    def secret_array(self, what: str) -> bytearray | None:
        """An "ay" field read into a bytearray the caller wipes (a PIN); None if absent."""
        present = self.byte(what)
        if not present:
            self.u32(what)
            return None
        length = self.u32(what)
        if length == NULL_LENGTH:
            return None
        if length >= MAX_ARRAY:
            raise MalformedMessage(f"{what}: length {length} over p11-kit's limit")
        return bytearray(self._take(length, what))

    def flagged_array(self, what: str = "byte array") -> bytes | None:
        """An "ay" field: a presence byte, then the array (or only its length when absent)."""
        present = self.byte(what)
        if not present:
            self.u32(what)  # the length of an absent array: nothing to read
            return None
        return self.array(what)

    def buffer_size(self, what: str = "output buffer") -> int | None:
        """An "f" field: the room the caller has (a count); 0 is a NULL buffer (a size query)."""
        size = self.u32(what)
        return None if size == 0 else size

    def check_count(self, count: int, min_item: int, what: str) -> None:
        """Refuse a count whose items could not fit in what is left (before building any)."""
        if count * min_item > self.remaining:
            raise MalformedMessage(
                f"{what}: {count} items cannot fit in the {self.remaining} bytes left"
            )

    def expect_end(self) -> None:
        if self.remaining:
            raise MalformedMessage(f"{self.remaining} unexpected bytes after the last field")


class Writer:
    """Builds one message body."""

    def __init__(self) -> None:
        self._out = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._out)

    def byte(self, value: int) -> None:
        self._out.append(value & 0xFF)

    def u32(self, value: int) -> None:
        self._out += _U32.pack(value & 0xFFFFFFFF)

    def u64(self, value: int) -> None:
        self._out += _U64.pack(value & 0xFFFFFFFFFFFFFFFF)

    def array(self, data: bytes | None) -> None:
        if data is None:
            self.u32(NULL_LENGTH)
            return
        self.u32(len(data))
        self._out += data

    def flagged_array(self, data: bytes | None, length: int = 0) -> None:
        """An "ay" answer: the bytes, or (data None) only the length they need."""
        if data is None:
            self.byte(0)
            self.u32(length)
        else:
            self.byte(1)
            self.array(data)

    def ulong_array(self, values: list[int] | None, length: int = 0) -> None:
        """An "au" answer: the values, or (values None) only how many there are."""
        if values is None:
            self.byte(0)
            self.u32(length)
            return
        self.byte(1)
        self.u32(len(values))
        for value in values:
            self.u64(value)

    def space_string(self, text: str, size: int) -> None:
        """A fixed-size blank-padded UTF-8 field ("s"), cut at a character boundary."""
        raw = text.encode("utf-8")
        while len(raw) > size:
            text = text[:-1]
            raw = text.encode("utf-8")
        self.array(raw.ljust(size, b" "))

    def version(self, major: int, minor: int) -> None:
        self.byte(major)
        self.byte(minor)
