"""Link messages: round trips, bounds, and garbage in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError, TrailingBytes
from ped.link import (
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
    decode,
    encode,
)
from ped.wire.framing import Frame

DEVICE = DeviceSummary(True, "PED2", "2.7.1", "SN-1", "remote")
SAMPLES = [
    LinkHello(1, 1, 1800, "hsm-host/hsm1"),
    LinkWelcome(1, 900, 30, "workstation", DEVICE),
    LinkWelcome(1, 1, 1, "", DeviceSummary()),
    LinkRefused(RefuseCode.TOO_MANY_LINKS, "later"),
    OpBegin(0),
    OpBegin(600_000),
    OpGranted(),
    Busy("link 1 from 10.0.0.5:4000 (hsm-a)"),
    OpEnd(),
    Keepalive(0xFFFFFFFF),
    KeepaliveAck(3),
    Close(CloseCode.IDLE_TIMEOUT, "no PED operation for 1800 s"),
    ConnectRequest(host="10.1.2.3", port=1503, idle_timeout=600, hsm_name="hsm1"),
    ConnectRequest(host="::1", port=1, connect_timeout_ms=1),
    ConnectRequest(peer="ws-7"),
    ConnectResult(ConnectCode.OK, "up", 1, 600, "ws", DEVICE),
    ConnectResult(ConnectCode.REFUSED, "connection refused by a:1503"),
    EndToEnd(Frame(0x23, b"\x00" * 100)),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    assert decode(encode(message)) == message


def test_hello_bytes_are_stable():
    # docs/protocol/link.md: type 0x01, min 1, max 1, idle u32, name text16
    assert encode(LinkHello(1, 1, 1800, "h")).payload == bytes.fromhex("0101 00000708 0001 68")


def test_end_to_end_repr_hides_payload():
    text = repr(EndToEnd(Frame(0x23, b"TOPSECRET")))
    assert "TOPSECRET" not in text and "9 bytes" in text


def test_only_e2e_frames_are_end_to_end():
    with pytest.raises(LocalProtocolError):
        EndToEnd(Frame(0x05, b""))


@pytest.mark.parametrize(
    "frame, error",
    [
        (Frame(0x01, bytes.fromhex("02 01 00000708 0000")), FieldOutOfRange),  # max < min
        (Frame(0x01, bytes.fromhex("01 01 00000000 0000")), FieldOutOfRange),  # idle 0
        (Frame(0x01, bytes.fromhex("01 01 00000708 0001 07")), FieldOutOfRange),  # control char
        (Frame(0x04, bytes.fromhex("0009 27C1")), FieldOutOfRange),  # wait > 600 s
        (Frame(0x07, b"x"), TrailingBytes),
        (Frame(0x0A, bytes.fromhex("00FF 0000")), FieldOutOfRange),  # unknown close code
        (
            Frame(0x41, bytes.fromhex("0000 0000 00 00000000 0000 00 0000 0000 0000 0000")),
            FieldOutOfRange,
        ),  # OK without version
        (
            Frame(0x40, bytes.fromhex("01 0000 05DB 0000 00000708 0000 00002710")),
            FieldOutOfRange,
        ),  # address kind without a host
    ],
)
def test_bad_fields_are_remote_errors(frame, error):
    with pytest.raises(error):
        decode(frame)


def test_texts_we_send_are_checked():
    with pytest.raises(LocalProtocolError):
        encode(Close(CloseCode.NORMAL, "x" * 300))
    with pytest.raises(LocalProtocolError):
        encode(Busy("line\nbreak"))
    with pytest.raises(LocalProtocolError):
        encode(ConnectRequest(host="a", peer="b"))
    with pytest.raises(LocalProtocolError):
        encode(OpBegin(600_001))


@settings(max_examples=200, deadline=None)
@given(st.integers(0x01, 0x4F), st.binary(max_size=300))
def test_garbage_payloads_only_raise_remote_errors(frame_type, payload):
    try:
        message = decode(Frame(frame_type, payload))
    except RemoteProtocolError:
        return
    assert decode(encode(message)) == message
