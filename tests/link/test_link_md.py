"""The test vectors of docs/protocol/link.md decode, mean what the text says, and
re-encode to the same bytes."""

from __future__ import annotations

from pathlib import Path

from ped.link import (
    PIPELINE_VERSION,
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Hop,
    Keepalive,
    KeepaliveAck,
    LinkConnection,
    LinkHello,
    LinkRefused,
    LinkState,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
    Side,
    decode,
    encode,
)
from ped.wire.framing import NEED_DATA, Frame, decode_frame, encode_frame
from tests.ped.vectors.blocks import document_vectors as read_vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "link.md"
DEVICE = DeviceSummary(True, "Remote PED", "1.0.0", "PED-0001", "remote")
EXPECTED = {
    "link_hello": LinkHello(1, 1, 1800, "hsmhost/hsm1"),
    "link_welcome": LinkWelcome(1, 900, 30, "ws1", DEVICE),
    "link_refused": LinkRefused(RefuseCode.TOO_MANY_LINKS, "retry later"),
    "op_begin": OpBegin(5000),
    "op_begin_pedo": OpBegin(5000, op_timeout=920),
    "op_granted": OpGranted(),
    "busy": Busy("link 1 (hsm-a)"),
    "op_end": OpEnd(),
    "keepalive": Keepalive(1),
    "keepalive_ack": KeepaliveAck(1),
    "close": Close(CloseCode.IDLE_TIMEOUT, "idle"),
    "connect_request": ConnectRequest(host="10.0.0.2", port=1503, idle_timeout=1800,
                                      hsm_name="hsm1", connect_timeout_ms=10_000),
    "connect_result_ok": ConnectResult(ConnectCode.OK, "up", 1, 900, "ws1", DEVICE),
    "connect_result_refused": ConnectResult(ConnectCode.REFUSED, "refused"),
}


#: Vectors of several frames in one write (section 4.1): what each frame is.
SEALED_READ = Frame(0x23, bytes.fromhex(
    "21c3ef8f054d0671b7c011b2181342d2bc5be36ed2f9d328b8333dc29df143f780aa3a9b62db750c48cd"
    "0536a02ee42062f616e75632dd90dcf6"))
PIPELINED = {
    "op_begin_then_sealed": [OpBegin(5000, op_timeout=920), EndToEnd(SEALED_READ)],
}


def vectors() -> dict[str, bytes]:
    return {name: bytes.fromhex(value) for name, value in read_vectors(DOC).items()}


def test_the_pipelined_vector_is_what_a_version_3_hsm_writes_and_pedclient_reads():
    wire = vectors()["op_begin_then_sealed"]
    hsm, pedclient = LinkConnection(Hop.LOCAL, Side.INITIATOR), LinkConnection(
        Hop.LOCAL, Side.RESPONDER)
    for conn in (hsm, pedclient):
        conn.state, conn.version = LinkState.OPEN, PIPELINE_VERSION
    assert b"".join(hsm.send(m) for m in PIPELINED["op_begin_then_sealed"]) == wire
    pedclient.receive_data(wire)
    assert [pedclient.next_event(), pedclient.next_event()] == PIPELINED["op_begin_then_sealed"]
    assert pedclient.next_event() is NEED_DATA
    # The same frame in PROTOCOL.md's vectors: the sealed request, untouched.
    protocol = read_vectors(DOC.parents[2] / "PROTOCOL.md")
    assert encode_frame(SEALED_READ).hex() == protocol["suite1_sealed_1_hsm_to_ped_read_secret"]


def test_vectors_match_the_code():
    found = vectors()
    for name in PIPELINED:
        found.pop(name)
    assert set(found) == set(EXPECTED)
    for name, wire in found.items():
        message = decode(decode_frame(wire))
        assert message == EXPECTED[name], name
        assert encode_frame(encode(message)) == wire, name
