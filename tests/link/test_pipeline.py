"""Link version 3: end-to-end frames pipelined behind OP_BEGIN (the sans-IO machine).

The initiator may send frames before the answer; the responder delivers them if it grants
and reports them `Undelivered` after its Busy; an older link refuses them either way.
"""

from __future__ import annotations

import pytest

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.link import (
    OP_TRANSITIONS,
    PIPELINE_VERSION,
    Busy,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Hop,
    LinkConnection,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    OpState,
    Side,
    Undelivered,
)
from ped.link.connection import BUSY_SENT, OP_MIN_VERSION
from ped.wire.framing import NEED_DATA, Frame

REQUEST = EndToEnd(Frame(0x23, b"sealed request"))
CANCEL = EndToEnd(Frame(0x23, b"sealed cancel"))
INIT = EndToEnd(Frame(0x20, b"handshake init"))


def open_link(version: int, hop: Hop = Hop.REMOTE) -> tuple[LinkConnection, LinkConnection]:
    client = LinkConnection(hop, Side.INITIATOR)
    server = LinkConnection(hop, Side.RESPONDER)
    if hop is Hop.REMOTE:
        first, answer = LinkHello(1, version, 1800), LinkWelcome(version, 600)
    else:
        first = ConnectRequest(host="10.0.0.2", port=1503)
        answer = ConnectResult(ConnectCode.OK, "up", version, 600, "ws",
                               DeviceSummary(True, "P", "1", "S", "remote"))
    server.receive_data(client.send(first))
    server.next_event()
    client.receive_data(server.send(answer))
    client.next_event()
    return client, server


def wire(client: LinkConnection, *messages: object) -> bytes:
    return b"".join(client.send(m) for m in messages)  # type: ignore[arg-type]


def drain(conn: LinkConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


@pytest.mark.parametrize("hop", list(Hop))
def test_frames_behind_op_begin_are_delivered_once_granted(hop: Hop) -> None:
    client, server = open_link(PIPELINE_VERSION, hop)
    data = wire(client, OpBegin(5000), REQUEST)
    assert client.op_state is OpState.REQUESTED
    assert drain(server, data) == [OpBegin(5000), REQUEST]
    assert server.op_state is OpState.REQUESTED
    assert drain(client, server.send(OpGranted())) == [OpGranted()]
    assert client.op_state is server.op_state is OpState.HELD
    drain(server, wire(client, OpEnd()))
    assert server.op_state is OpState.FREE


@pytest.mark.parametrize("hop", list(Hop))
def test_after_busy_the_pipelined_frames_come_out_undelivered(hop: Hop) -> None:
    client, server = open_link(PIPELINE_VERSION, hop)
    data = wire(client, OpBegin(0), REQUEST, CANCEL)
    assert drain(server, data[:12]) == [OpBegin(0)]  # only the OpBegin has come yet
    answer = server.send(Busy("link 1"))
    assert server.op_state is OpState.DISCARDING
    assert drain(server, data[12:]) == [Undelivered(REQUEST.frame), Undelivered(CANCEL.frame)]
    assert drain(client, answer) == [Busy("link 1")]
    assert client.op_state is OpState.FREE
    # The initiator may not send end-to-end frames without a new OpBegin...
    with pytest.raises(LocalProtocolError):
        client.send(REQUEST)
    # ...and the same bytes go again behind the next one, delivered this time.
    data = wire(client, OpBegin(0), REQUEST, CANCEL)
    assert drain(server, data) == [OpBegin(0), REQUEST, CANCEL]
    assert drain(client, server.send(OpGranted())) == [OpGranted()]
    assert server.op_state is OpState.HELD


def test_a_late_ped_frame_while_discarding_is_no_error() -> None:
    client, server = open_link(PIPELINE_VERSION)
    drain(server, wire(client, OpBegin(0)))
    drain(client, server.send(Busy("x")))
    frame = EndToEnd(Frame(0x23, b"late answer"))
    assert drain(client, server.send(frame)) == [frame]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("hop", list(Hop))
def test_an_older_link_refuses_pipelined_frames(version: int, hop: Hop) -> None:
    client, server = open_link(version, hop)
    client.send(OpBegin(0))
    with pytest.raises(LocalProtocolError, match="needs 3"):
        client.send(REQUEST)
    # A peer that pipelines anyway on such a link broke the protocol.
    rogue, server = open_link(version, hop)
    rogue.version = PIPELINE_VERSION  # a peer that does not follow the negotiation
    data = wire(rogue, OpBegin(0), INIT)
    rogue.version = version
    server.receive_data(data)
    assert server.next_event() == OpBegin(0)
    with pytest.raises(RemoteProtocolError, match="requested on a link of version"):
        server.next_event()


def test_an_older_link_answered_busy_stays_free_and_refuses_stray_frames() -> None:
    client, server = open_link(2)
    drain(server, wire(client, OpBegin(0)))
    server.send(Busy("x"))
    assert server.op_state is OpState.FREE  # no pipelining, nothing to discard
    stray = LinkConnection(Hop.REMOTE, Side.INITIATOR)
    stray.state, stray.op_state, stray.version = client.state, OpState.HELD, 2
    server.receive_data(stray.send(REQUEST))
    with pytest.raises(RemoteProtocolError, match="operation state is free"):
        server.next_event()


def test_the_pipelining_transitions_are_data() -> None:
    ini, rsp = Side.INITIATOR, Side.RESPONDER
    assert OP_TRANSITIONS[(ini, OpState.REQUESTED, "e2e")] is OpState.REQUESTED
    assert OP_TRANSITIONS[(ini, OpState.DISCARDING, "e2e")] is OpState.DISCARDING
    assert OP_TRANSITIONS[(rsp, OpState.DISCARDING, "e2e")] is OpState.DISCARDING
    assert set(OP_MIN_VERSION.values()) == {PIPELINE_VERSION}
    assert BUSY_SENT == {OpState.REQUESTED: OpState.DISCARDING}
    # Nothing the initiator may send leads out of DISCARDING but a new OpBegin.
    out = {k[2]: v for k, v in OP_TRANSITIONS.items() if k[:2] == (ini, OpState.DISCARDING)}
    assert out == {"e2e": OpState.DISCARDING, 0x04: OpState.REQUESTED}
