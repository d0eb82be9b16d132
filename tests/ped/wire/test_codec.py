"""Field codec: exact bytes, bounds, typed errors, hypothesis round trips and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.errors import (
    FieldOutOfRange,
    FrameError,
    LocalProtocolError,
    TrailingBytes,
    TruncatedFrame,
)
from ped.wire.codec import Reader, Writer

SETTINGS = settings(max_examples=200, deadline=None)


def test_exact_bytes() -> None:
    data = Writer().u8(1).u16(0x0203).u32(0x04050607).u64(8).raw(b"ab").text16("é").getvalue()
    assert data == b"\x01\x02\x03\x04\x05\x06\x07" + (8).to_bytes(8, "big") + b"ab\x00\x02\xc3\xa9"


@pytest.mark.parametrize(
    ("method", "value"),
    [("u8", 256), ("u16", 65536), ("u32", 2**32), ("u64", 2**64), ("u8", -1)],
)
def test_writer_refuses_out_of_range(method: str, value: int) -> None:
    with pytest.raises(LocalProtocolError):
        getattr(Writer(), method)(value)


def test_writer_refuses_long_bytes16() -> None:
    with pytest.raises(LocalProtocolError):
        Writer().bytes16(bytes(65536))


def test_reader_errors_name_the_field_not_the_content() -> None:
    with pytest.raises(TruncatedFrame, match="'colour'"):
        Reader(b"", what="X").u8("colour")
    with pytest.raises(FieldOutOfRange, match="'colour' is 9; allowed 1-7"):
        Reader(b"\x09").u8("colour", low=1, high=7)
    with pytest.raises(FieldOutOfRange, match="label"):
        Reader(b"\x00\x05hello").text16("label", max_len=4)
    with pytest.raises(FieldOutOfRange, match="UTF-8"):
        Reader(b"\x00\x01\xff").text16("label")
    reader = Reader(b"\x01\x02")
    reader.u8("a")
    with pytest.raises(TrailingBytes):
        reader.finish()


@SETTINGS
@given(
    st.integers(0, 255),
    st.integers(0, 2**16 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=100),
    st.text(max_size=50),
)
def test_round_trip(a: int, b: int, c: int, d: int, blob: bytes, text: str) -> None:
    data = Writer().u8(a).u16(b).u32(c).u64(d).bytes16(blob).text16(text).getvalue()
    reader = Reader(data)
    assert reader.u8("a") == a
    assert reader.u16("b") == b
    assert reader.u32("c") == c
    assert reader.u64("d") == d
    assert reader.bytes16("blob") == blob
    assert reader.text16("text", max_len=1024) == text
    reader.finish()


@SETTINGS
@given(st.binary(max_size=64))
def test_garbage_raises_only_frame_errors(data: bytes) -> None:
    reader = Reader(data)
    try:
        reader.u8("a", low=1, high=7)
        reader.text16("b", max_len=8)
        reader.u32("c")
        reader.bytes16("d", max_len=16)
        reader.finish()
    except FrameError:
        pass
