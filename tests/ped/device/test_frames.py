"""Device transport frames (0x30-0x3F): encoding, decoding, the sans-IO state machine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.device.frames import (
    CloseReason,
    ConnState,
    DeviceConnection,
    DeviceErrorMessage,
    DeviceEvent,
    ErrorCode,
    EventKind,
    Hello,
    Info,
    Ping,
    Pong,
    Role,
    SessionClose,
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
    SessionClose(7, CloseReason.SHUTTING_DOWN, "bye"),
    SessionData(7, Frame(0x23, b"\x00\x01ciphertext")),
    DeviceEvent(7, EventKind.KEY_READ, 1, "00112233445566778899aabbccddeeff", "ok", "key 1 of 2"),
    DeviceErrorMessage(ErrorCode.BUSY, "another host"),
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


def test_state_machine_happy_path() -> None:
    host, device = DeviceConnection(Role.HOST), DeviceConnection(Role.DEVICE)

    def carry(src: DeviceConnection, dst: DeviceConnection, message: object) -> object:
        dst.receive_data(src.send(message))  # type: ignore[arg-type]
        return dst.next_event()

    assert carry(host, device, Hello(host="h")) == Hello(host="h")
    info = Info(1, "m", "f", "s", "remote")
    assert carry(device, host, info) == info
    assert host.state is device.state is ConnState.READY
    carry(host, device, SessionOpen(1))
    carry(device, host, SessionOpened(1))
    assert host.sessions == device.sessions == {1}
    data = SessionData(1, Frame(0x20, b"x"))
    assert carry(host, device, data) == data
    carry(device, host, SessionClose(1))
    assert host.sessions == device.sessions == set()
    with pytest.raises(LocalProtocolError, match="not open"):
        host.send(SessionData(1, Frame(0x20, b"x")))


def test_state_machine_refusals() -> None:
    host = DeviceConnection(Role.HOST)
    with pytest.raises(LocalProtocolError, match="awaiting-hello"):
        host.send(SessionOpen(1))
    with pytest.raises(LocalProtocolError, match="only be sent by the device"):
        host.send(Info(1, "m", "f", "s", "remote"))
    device = DeviceConnection(Role.DEVICE)
    device.receive_data(encode_message(SessionOpen(1)))
    with pytest.raises(RemoteProtocolError, match="awaiting-hello"):
        device.next_event()
    device = DeviceConnection(Role.DEVICE)
    device.receive_data(encode_message(Pong(1)))
    with pytest.raises(RemoteProtocolError, match="only be sent by the device"):
        device.next_event()
    host = DeviceConnection(Role.HOST)
    host.send(Hello())
    host.receive_data(b"RP\x01\x23\x00\x00\x00\x00")  # an e2e frame outside SESSION_DATA
    with pytest.raises(RemoteProtocolError, match=r"not a device frame|not accepted"):
        host.next_event()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_only_raises_remote_errors(data: bytes) -> None:
    conn = DeviceConnection(Role.DEVICE)
    try:
        conn.receive_data(data)
        while conn.next_event() is not None:
            pass
        conn.receive_data(encode_message(Hello()) + data)
        while conn.next_event() is not None:
            pass
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0x30, 0x3F), st.binary(max_size=80))
def test_any_device_payload_decodes_or_raises_remote(type_: int, payload: bytes) -> None:
    try:
        decode_message(Frame(type_, payload))
    except RemoteProtocolError:
        pass


def test_host_refuses_an_info_outside_the_versions_its_hello_offered() -> None:
    from ped.device.frames import DeviceConnection, Hello, Info, Role, encode_message
    from ped.errors import RemoteProtocolError

    host = DeviceConnection(Role.HOST)
    host.send(Hello(1, 1, "host"))
    answer = Info(2, "pedemu", "1.0.0", "EMU-1", "remote", max_sessions=4)
    host.receive_data(encode_message(answer))
    with pytest.raises(RemoteProtocolError, match="refusing to downgrade"):
        host.next_event()


def _ready_host() -> DeviceConnection:
    host = DeviceConnection(Role.HOST)
    host.send(Hello())
    host.receive_data(encode_message(Info(1, "m", "f", "s", "remote")))
    host.next_event()
    host.send(SessionOpen(1))
    host.receive_data(encode_message(SessionOpened(1)))
    host.next_event()
    return host


def test_frames_are_parsed_one_per_next_event() -> None:
    # A host relays a session's frame before it parses what came behind it: a broken
    # frame behind a good one is reported only when it is reached.
    host = _ready_host()
    data = SessionData(1, Frame(0x20, b"answer"))
    host.receive_data(encode_message(data) + b"RP\x01\x36\x00\x00\x00\x01\xff")
    assert host.next_event() == data
    with pytest.raises(RemoteProtocolError):
        host.next_event()


def test_eof_gives_the_complete_frames_before_it_then_checks_the_end() -> None:
    host = _ready_host()
    event = DeviceEvent(1, EventKind.OP_FINISHED, outcome="ok")
    host.receive_data(encode_message(event) + encode_message(SessionClose(1)))
    host.receive_eof()
    assert host.next_event() == event
    assert host.next_event() == SessionClose(1)
    assert host.next_event() is None and host.state is ConnState.CLOSED
    truncated = _ready_host()
    truncated.receive_data(encode_message(event) + encode_message(SessionClose(1))[:-1])
    with pytest.raises(RemoteProtocolError, match="unfinished frame"):
        truncated.receive_eof()
