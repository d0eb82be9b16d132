"""The sans-IO link state machine: transitions, negotiation, bounds, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.link import (
    LINK_TRANSITIONS,
    OP_TRANSITIONS,
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectionLost,
    ConnectRequest,
    ConnectResult,
    EndToEnd,
    Hop,
    Keepalive,
    LinkConnection,
    LinkHello,
    LinkRefused,
    LinkState,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    OpState,
    RefuseCode,
    Side,
    negotiate_version,
)
from ped.wire.framing import NEED_DATA, Frame
from tests.frames import frame_bytes


def pair(hop: Hop = Hop.REMOTE):
    return LinkConnection(hop, Side.INITIATOR), LinkConnection(hop, Side.RESPONDER)


def deliver(sender: LinkConnection, receiver: LinkConnection, message):
    receiver.receive_data(sender.send(message))
    return receiver.next_event()


def open_remote():
    client, server = pair()
    deliver(client, server, LinkHello(idle_timeout=1800))
    deliver(server, client, LinkWelcome(1, 600))
    return client, server


def test_full_remote_session():
    client, server = open_remote()
    assert client.state is server.state is LinkState.OPEN
    assert client.idle_timeout == server.idle_timeout == 600
    assert deliver(client, server, OpBegin(500)) == OpBegin(500)
    assert client.op_state is server.op_state is OpState.REQUESTED
    deliver(server, client, OpGranted())
    assert client.op_state is server.op_state is OpState.HELD
    frame = Frame(0x20, b"init")
    assert deliver(client, server, EndToEnd(frame)).frame == frame
    deliver(server, client, EndToEnd(Frame(0x21, b"resp")))
    deliver(client, server, OpEnd())
    assert client.op_state is OpState.FREE
    deliver(server, client, Keepalive(1))
    assert deliver(client, server, Close(CloseCode.NORMAL, "bye")) == Close(CloseCode.NORMAL, "bye")
    assert client.state is server.state is LinkState.CLOSED
    server.receive_data(b"")
    assert server.next_event() == ConnectionLost(clean=True)


def test_busy_returns_to_free_and_e2e_needs_the_ped():
    client, server = open_remote()
    with pytest.raises(LocalProtocolError, match="operation state is free"):
        client.send(EndToEnd(Frame(0x23, b"x")))
    deliver(client, server, OpBegin())
    deliver(server, client, Busy("link 1"))
    assert client.op_state is OpState.FREE
    with pytest.raises(LocalProtocolError):
        client.send(OpEnd())
    # A late frame from the PED side is fine in any operation state.
    deliver(server, client, EndToEnd(Frame(0x23, b"late")))


def test_peer_sending_e2e_without_the_ped_is_a_remote_error():
    _client, server = open_remote()
    server.receive_data(frame_bytes(0x23, b"sneaky"))
    with pytest.raises(RemoteProtocolError, match="operation state is free"):
        server.next_event()
    with pytest.raises(LocalProtocolError):
        server.next_event()  # a failed connection stays failed
    # ...but it can still say why it closes.
    assert server.send_final(Close(CloseCode.PROTOCOL_ERROR, "bad"))[3] == 0x0A


def test_wrong_direction_and_wrong_state():
    client, server = pair()
    with pytest.raises(LocalProtocolError):
        server.send(OpGranted())
    with pytest.raises(LocalProtocolError):
        client.send(OpBegin())
    server.receive_data(frame_bytes(0x04, bytes(4)))  # OpBegin before hello
    with pytest.raises(RemoteProtocolError, match="state start"):
        server.next_event()


def test_version_negotiation_never_downgrades():
    assert negotiate_version(LinkHello(1, 5)) == 3
    assert negotiate_version(LinkHello(1, 1)) == 1  # an older pedclient gets version 1
    assert negotiate_version(LinkHello(1, 2)) == 2
    assert negotiate_version(LinkHello(4, 5)) is None
    assert negotiate_version(LinkHello(1, 3), low=2, high=4) == 3
    client, server = pair()
    deliver(client, server, LinkHello(1, 1, 1800))
    with pytest.raises(LocalProtocolError):
        server.send(LinkWelcome(2, 100))
    with pytest.raises(LocalProtocolError):
        server.send(LinkWelcome(1, 3600))  # longer than the client's idle timeout
    # A (broken or hostile) server that picks a version we did not offer is refused.
    client, _ = pair()
    client.send(LinkHello(1, 1, 1800))
    client.receive_data(frame_bytes(0x02, LinkWelcome(2, 100).payload()))
    with pytest.raises(RemoteProtocolError, match="refusing to downgrade"):
        client.next_event()
    client, _ = pair()
    client.send(LinkHello(1, 1, 60))
    client.receive_data(frame_bytes(0x02, LinkWelcome(1, 100).payload()))
    with pytest.raises(RemoteProtocolError, match="shorter must win"):
        client.next_event()


def test_refusal_closes():
    client, server = pair()
    deliver(client, server, LinkHello())
    assert deliver(server, client, LinkRefused(RefuseCode.SHUTTING_DOWN)).code is (
        RefuseCode.SHUTTING_DOWN
    )
    assert client.state is LinkState.CLOSED


def test_local_hop():
    hsm, endpoint = pair(Hop.LOCAL)
    with pytest.raises(LocalProtocolError):
        hsm.send(LinkHello())  # not on the local hop
    deliver(hsm, endpoint, ConnectRequest(host="a", port=1503))
    assert endpoint.request.host == "a"
    deliver(endpoint, hsm, ConnectResult(ConnectCode.OK, "", 1, 30))
    assert hsm.state is LinkState.OPEN and hsm.idle_timeout == 30
    deliver(hsm, endpoint, OpBegin())
    deliver(endpoint, hsm, OpGranted())
    with pytest.raises(LocalProtocolError):
        hsm.send(Keepalive(1))  # keepalives are for the network hop only
    hsm2, endpoint2 = pair(Hop.LOCAL)
    deliver(hsm2, endpoint2, ConnectRequest(host="a"))
    deliver(endpoint2, hsm2, ConnectResult(ConnectCode.TIMEOUT, "no answer"))
    assert hsm2.state is LinkState.CLOSED


def test_frames_after_our_close_are_ignored():
    client, server = open_remote()
    deliver(client, server, OpBegin())
    deliver(server, client, OpGranted())
    in_flight = client.send(EndToEnd(Frame(0x23, b"x")))
    server.send_final(Close(CloseCode.DEVICE_GONE))
    server.receive_data(in_flight + client.send(Close()))
    server.receive_data(b"")
    assert server.next_event() == ConnectionLost(clean=True)


def test_truncated_stream_is_an_error():
    client, server = pair()
    server.receive_data(client.send(LinkHello())[:-1])
    server.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_transitions_are_data():
    assert LINK_TRANSITIONS[(Hop.REMOTE, Side.INITIATOR, LinkState.START, 0x01)] is (
        LinkState.NEGOTIATING
    )
    assert OP_TRANSITIONS[(Side.RESPONDER, OpState.REQUESTED, 0x06)] is OpState.FREE
    assert all(isinstance(v, LinkState) for v in LINK_TRANSITIONS.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=8), st.booleans())
def test_garbage_in_only_remote_errors(chunks, open_first):
    client, server = open_remote() if open_first else pair()
    for receiver in (server, client):
        try:
            for chunk in [*chunks, b""]:
                receiver.receive_data(chunk)
                while (event := receiver.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectionLost):
                        break
        except RemoteProtocolError:
            continue


@settings(max_examples=100, deadline=None)
@given(st.integers(0x01, 0x4F), st.binary(max_size=80))
def test_well_framed_garbage_only_remote_errors(frame_type, payload):
    client, server = open_remote()
    for receiver in (server, client):
        receiver.receive_data(frame_bytes(frame_type, payload))
        try:
            receiver.next_event()
        except RemoteProtocolError:
            pass


def test_oversize_frames_are_refused_before_buffering():
    server = LinkConnection(Hop.REMOTE, Side.RESPONDER)
    server.receive_data(b"RP\x01\x01\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError, match="maximum"):
        server.next_event()
    assert server.buffered == 0
