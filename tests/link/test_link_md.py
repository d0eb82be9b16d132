"""The test vectors of docs/protocol/link.md decode, mean what the text says, and
re-encode to the same bytes."""

from __future__ import annotations

from pathlib import Path

from ped.link import (
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
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
from ped.wire.framing import decode_frame, encode_frame
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


def vectors() -> dict[str, bytes]:
    return {name: bytes.fromhex(value) for name, value in read_vectors(DOC).items()}


def test_vectors_match_the_code():
    found = vectors()
    assert set(found) == set(EXPECTED)
    for name, wire in found.items():
        message = decode(decode_frame(wire))
        assert message == EXPECTED[name], name
        assert encode_frame(encode(message)) == wire, name
