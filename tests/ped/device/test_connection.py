"""The sans-IO device transport connection: states, directions, sessions, NEED_DATA."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.device.connection import ConnState, DeviceConnection
from ped.device.messages import (
    ConnectionRole,
    DeviceEvent,
    EventKind,
    Hello,
    Info,
    Pong,
    SessionClose,
    SessionData,
    SessionOpen,
    SessionOpened,
    encode_message,
)
from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.wire.framing import NEED_DATA, Frame


def test_state_machine_happy_path() -> None:
    host, device = DeviceConnection(ConnectionRole.HOST), DeviceConnection(ConnectionRole.DEVICE)

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
    host = DeviceConnection(ConnectionRole.HOST)
    with pytest.raises(LocalProtocolError, match="awaiting-hello"):
        host.send(SessionOpen(1))
    with pytest.raises(LocalProtocolError, match="only be sent by the device"):
        host.send(Info(1, "m", "f", "s", "remote"))
    device = DeviceConnection(ConnectionRole.DEVICE)
    device.receive_data(encode_message(SessionOpen(1)))
    with pytest.raises(RemoteProtocolError, match="awaiting-hello"):
        device.next_event()
    device = DeviceConnection(ConnectionRole.DEVICE)
    device.receive_data(encode_message(Pong(1)))
    with pytest.raises(RemoteProtocolError, match="only be sent by the device"):
        device.next_event()
    host = DeviceConnection(ConnectionRole.HOST)
    host.send(Hello())
    host.receive_data(b"RP\x01\x23\x00\x00\x00\x00")  # an e2e frame outside SESSION_DATA
    with pytest.raises(RemoteProtocolError, match=r"not a device frame|not accepted"):
        host.next_event()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_only_raises_remote_errors(data: bytes) -> None:
    conn = DeviceConnection(ConnectionRole.DEVICE)
    try:
        conn.receive_data(data)
        while conn.next_event() is not NEED_DATA:
            pass
        conn.receive_data(encode_message(Hello()) + data)
        while conn.next_event() is not NEED_DATA:
            pass
    except RemoteProtocolError:
        pass


def test_host_refuses_an_info_outside_the_versions_its_hello_offered() -> None:
    host = DeviceConnection(ConnectionRole.HOST)
    host.send(Hello(1, 1, "host"))
    answer = Info(2, "pedemu", "1.0.0", "EMU-1", "remote", max_sessions=4)
    host.receive_data(encode_message(answer))
    with pytest.raises(RemoteProtocolError, match="refusing to downgrade"):
        host.next_event()


def _ready_host() -> DeviceConnection:
    host = DeviceConnection(ConnectionRole.HOST)
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
    assert host.next_event() is NEED_DATA and host.state is ConnState.CLOSED
    truncated = _ready_host()
    truncated.receive_data(encode_message(event) + encode_message(SessionClose(1))[:-1])
    with pytest.raises(RemoteProtocolError, match="unfinished frame"):
        truncated.receive_eof()


def test_next_event_needs_data_until_a_whole_frame_is_in() -> None:
    device = DeviceConnection(ConnectionRole.DEVICE)
    assert device.next_event() is NEED_DATA
    data = encode_message(Hello(host="h"))
    device.receive_data(data[:5])
    assert device.next_event() is NEED_DATA
    device.receive_data(data[5:])
    assert device.next_event() == Hello(host="h")
    assert device.next_event() is NEED_DATA
