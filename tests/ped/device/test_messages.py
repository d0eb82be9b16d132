"""Device transport messages (0x30-0x3F): encoding, decoding, test vectors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.device.messages import (
    DeviceErrorCode,
    DeviceErrorMessage,
    DeviceEvent,
    EventKind,
    Hello,
    Info,
    Ping,
    Pong,
    SessionClose,
    SessionCloseReason,
    SessionData,
    SessionOpen,
    SessionOpened,
    decode_message,
    encode_message,
)
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.wire.framing import Frame, decode_frame

MESSAGES = [
    Hello(1, 1, "ws-01"),
    Info(1, "pedemu", "1.0.0", "EMU-1", "remote", 16),
    SessionOpen(7),
    SessionOpened(7),
    SessionClose(7, SessionCloseReason.SHUTTING_DOWN, "bye"),
    SessionData(7, Frame(0x23, b"\x00\x01ciphertext")),
    DeviceEvent(7, EventKind.KEY_READ, 1, "00112233445566778899aabbccddeeff", "ok", "key 1 of 2"),
    DeviceErrorMessage(DeviceErrorCode.BUSY, "another host"),
    Ping(2**64 - 1),
    Pong(5),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    data = encode_message(message)  # type: ignore[arg-type]
    assert decode_message(decode_frame(data)) == message


def test_test_vectors() -> None:
    # Byte-exact examples documented in docs/protocol/device.md.
    assert encode_message(SessionOpen(1)).hex() == "52500132" + "00000004" + "00000001"
    assert encode_message(SessionData(1, Frame(0x23, b"\xaa\xbb"))).hex() == (
        "52500135" + "00000007" + "00000001" + "23" + "aabb"
    )
    assert encode_message(Hello(1, 1, "h")).hex() == "52500130" + "00000005" + "0101" + "000168"


def test_session_data_must_carry_an_end_to_end_frame() -> None:
    with pytest.raises(LocalProtocolError, match="not end-to-end"):
        encode_message(SessionData(1, Frame(0x05, b"")))
    bad = Frame(0x35, b"\x00\x00\x00\x01\x05")
    with pytest.raises(RemoteProtocolError):
        decode_message(bad)


def test_event_text_is_checked() -> None:
    with pytest.raises(LocalProtocolError, match="control"):
        encode_message(DeviceEvent(1, EventKind.KEY_READ, outcome="ok\nforged line"))
    with pytest.raises(LocalProtocolError, match="over"):
        encode_message(DeviceEvent(1, EventKind.KEY_READ, detail="x" * 300))
    line = DeviceEvent(3, EventKind.KEY_REFUSED, 2, "ab", "wrong-colour").describe()
    assert line == "key-refused red keyset ab result wrong-colour"


@settings(max_examples=200, deadline=None)
@given(st.integers(0x30, 0x3F), st.binary(max_size=80))
def test_any_device_payload_decodes_or_raises_remote(type_: int, payload: bytes) -> None:
    try:
        decode_message(Frame(type_, payload))
    except RemoteProtocolError:
        pass
