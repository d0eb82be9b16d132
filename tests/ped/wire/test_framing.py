"""Frame envelope: exact bytes, every decoding error, hypothesis round trips and garbage."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ped.errors import (
    BadMagic,
    FrameError,
    FrameTooLarge,
    LocalProtocolError,
    TrailingBytes,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)
from ped.wire.framing import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    NEED_DATA,
    WIRE_VERSION,
    Frame,
    FrameDecoder,
    decode_frame,
    encode_frame,
)
from ped.wire.types import E2E_RANGE, E2E_TYPES, OPS_TYPES, E2EType, OpType
from tests.frames import frame_bytes

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

frames = st.builds(Frame, st.integers(0, 255), st.binary(max_size=300))


def test_exact_bytes() -> None:
    assert encode_frame(Frame(0x23, b"abc")) == b"RP\x01\x23\x00\x00\x00\x03abc"
    assert frame_bytes(0x20) == b"RP\x01\x20\x00\x00\x00\x00"
    assert HEADER_SIZE == 8 and WIRE_VERSION == 1


def test_repr_hides_payload() -> None:
    assert repr(Frame(0x51, b"SECRETSECRET")) == "Frame(type=0x51, payload=<12 bytes>)"


def test_type_must_fit_a_byte() -> None:
    with pytest.raises(LocalProtocolError):
        Frame(256, b"")


def test_encode_refuses_oversize() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Frame(1, bytes(MAX_PAYLOAD + 1)))
    assert len(encode_frame(Frame(1, bytes(MAX_PAYLOAD)))) == HEADER_SIZE + MAX_PAYLOAD


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"RP\x01", TruncatedFrame),
        (b"XX\x01\x20\x00\x00\x00\x00", BadMagic),
        (b"RP\x02\x20\x00\x00\x00\x00", UnsupportedVersion),
        (b"RP\x01\x99\x00\x00\x00\x00", UnknownFrameType),
        (b"RP\x01\x20\x00\x01\x00\x01", FrameTooLarge),
        (b"RP\x01\x20\x00\x00\x00\x02a", TruncatedFrame),
        (b"RP\x01\x20\x00\x00\x00\x00z", TrailingBytes),
    ],
)
def test_decode_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_frame(data, accepted=E2E_TYPES)


def test_decoder_refuses_oversize_header_before_payload() -> None:
    decoder = FrameDecoder(max_payload=16)
    decoder.feed(b"RP\x01\x20\xff\xff\xff\xff")
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"more")


def test_decoder_eof_mid_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(0x20, b"abcdef")[:-1])
    assert decoder.next_frame() is NEED_DATA
    with pytest.raises(TruncatedFrame):
        decoder.check_eof()


def test_type_ranges() -> None:
    assert E2E_TYPES == {0x20, 0x21, 0x22, 0x23, 0x24, 0x25}  # 0x24-0x25: ped.pake
    assert all(0x50 <= t <= 0x6F for t in OPS_TYPES)
    assert E2EType.SEALED in E2E_RANGE and OpType.READ_SECRET not in E2E_RANGE


@SETTINGS
@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@SETTINGS
@given(st.lists(frames, max_size=8), st.data())
def test_decoder_reassembles_any_split(frame_list: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    out: list[Frame] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[previous:cut])
        previous = cut
        while (frame := decoder.next_frame()) is not NEED_DATA:
            out.append(frame)
    decoder.check_eof()
    assert out == frame_list


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_frame_errors(data: bytes) -> None:
    try:
        decode_frame(data, accepted=E2E_TYPES, max_payload=128)
    except FrameError:
        pass
    decoder = FrameDecoder(accepted=E2E_TYPES, max_payload=128)
    decoder.feed(data)
    try:
        while decoder.next_frame() is not NEED_DATA:
            pass
        decoder.check_eof()
    except FrameError:
        pass


@SETTINGS
@given(frames, st.data())
def test_mutated_frames_raise_only_frame_errors(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(encode_frame(frame))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            decoded = decode_frame(candidate, max_payload=1024)
        except FrameError:
            continue
        assert isinstance(decoded, Frame)
