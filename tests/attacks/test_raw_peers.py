"""Attacks 5, 6 and 12 on real daemons, by a raw peer on their sockets.

* 6: a length prefix promising gigabytes, and a frame just over the maximum (all its
  bytes sent), to pedserver's TCP port (before and after the link hello) and to
  pedclient's local socket (before the connect request and on an open link): refused at
  the header with a close reason naming the size, and the daemon keeps serving.
  pedserver's hello timeout is set to 300 s here, so an answer that came only at the
  hello timeout would not arrive within the 20 s each exchange may take.
* 5: a pedclient offering only newer link versions, or version 0; frames of another
  envelope version on both daemons' sockets; an HSM offering an unknown end-to-end
  handshake suite through the daemons to the PED: refused, never downgraded.
* 12: an HSM that sends the PED sealed operation frames of another session, or
  plaintext operation frames, before any handshake: nothing is served and the same
  link then runs a genuine session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from keys.colors import Color
from ped.channel.handshake import HandshakeRefusal, RefuseReason
from ped.hsm_api import open_ped_session
from ped.link import LINK_VERSION_MAX, connect_via_pedclient
from ped.link.messages import (
    Close,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    RefuseCode,
    encode,
)
from ped.ops import Unsupported
from ped.ops.hsm_side import HsmSideSession
from ped.wire.codec import Writer
from ped.wire.framing import MAX_PAYLOAD, Frame, encode_frame
from ped.wire.types import CloseCode, E2EType, OpType
from pedtools.testing import wait_for_log
from tests.attacks.raw import exchange, header
from tests.attacks.rig import HSM_SERIAL, RPV, EvilRelay, Stack, running_stack
from tests.pedserver.fakes import short_tmp

HELLO = encode_frame(encode(LinkHello(client_name="raw-peer")))
#: (the bytes, then the rest of the frame sent once the daemon has answered)
HUGE = {
    "4 GiB promised": ([header(0x23, 0xFFFFFFFF)], b""),
    "one byte over, sent": ([header(0x23, MAX_PAYLOAD + 1)], bytes(MAX_PAYLOAD + 1)),
}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with short_tmp() as path, running_stack(path, server_config={"hello_timeout": 300}) as s:
        yield s


def _connect_request(port: int) -> bytes:
    return encode_frame(encode(ConnectRequest(host="127.0.0.1", port=port, hsm_name="raw")))


def _restamp(data: bytes, version: int) -> bytes:
    return data[:2] + bytes([version]) + data[3:]


# ------------------------------------------------------------------------- 6: sizes


@pytest.mark.parametrize("what", sorted(HUGE))
@pytest.mark.parametrize("when", ["instead of the hello", "after the hello"])
async def test_oversize_to_pedserver(stack: Stack, what: str, when: str) -> None:
    before = [HELLO] if when == "after the hello" else []
    chunks, rest = HUGE[what]
    answer = await exchange(stack.port, *before, *chunks, after=rest)
    *first, last = answer
    if before:
        assert len(first) == 1 and isinstance(first[0], LinkWelcome)
        assert isinstance(last, Close) and last.code is CloseCode.PROTOCOL_ERROR
    else:
        assert first == [] and isinstance(last, LinkRefused)
        assert last.code is RefuseCode.PROTOCOL_ERROR
    assert "over the 65536-byte maximum" in last.text
    await stack.wait_no_links()
    assert await stack.login() == stack.expected


@pytest.mark.parametrize("what", sorted(HUGE))
@pytest.mark.parametrize("when", ["instead of the connect request", "on an open link"])
async def test_oversize_to_pedclient(stack: Stack, what: str, when: str) -> None:
    chunks, rest = HUGE[what]
    if when == "on an open link":
        chunks = [_connect_request(stack.port), *chunks]
    else:
        chunks = [chunks[0][:3] + bytes([0x40]) + chunks[0][4:]]  # a huge connect request
    answer = await exchange(stack.endpoint, *chunks, after=rest)
    if when == "on an open link":
        assert len(answer) == 2 and isinstance(answer[0], ConnectResult) and answer[0].ok
        closed = answer[1]
        assert isinstance(closed, Close) and closed.code is CloseCode.PROTOCOL_ERROR
        assert "over the 65536-byte maximum" in closed.text
    else:
        [result] = answer
        assert isinstance(result, ConnectResult) and result.code is ConnectCode.BAD_REQUEST
        assert "over the 65536-byte maximum" in result.text
    await stack.wait_no_links()  # pedclient closed its link to pedserver too
    assert await stack.login() == stack.expected


# ----------------------------------------------------------------------- 5: versions


async def test_only_newer_link_versions_are_refused_with_both_ranges(stack: Stack) -> None:
    hello = encode_frame(encode(LinkHello(min_version=LINK_VERSION_MAX + 1, max_version=9)))
    [refused] = await exchange(stack.port, hello)
    assert isinstance(refused, LinkRefused) and refused.code is RefuseCode.UNSUPPORTED_VERSION
    assert f"1-{LINK_VERSION_MAX}" in refused.text and f"{LINK_VERSION_MAX + 1}-9" in refused.text
    assert "upgrade" in refused.text


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 1)])
async def test_a_hello_offering_version_zero_is_refused(stack: Stack, low: int, high: int) -> None:
    payload = Writer().u8(low).u8(high).u32(1800).text16("old").getvalue()
    [refused] = await exchange(stack.port, encode_frame(Frame(LinkHello.TYPE, payload)))
    assert isinstance(refused, LinkRefused) and refused.code is RefuseCode.PROTOCOL_ERROR
    assert "min version" in refused.text


async def test_a_wider_offer_gets_our_version_not_a_lower_one(stack: Stack) -> None:
    hello = encode_frame(encode(LinkHello(min_version=1, max_version=200)))
    welcome, *_ = await exchange(stack.port, hello, encode_frame(encode(Close(CloseCode.NORMAL))))
    assert isinstance(welcome, LinkWelcome) and welcome.version == LINK_VERSION_MAX


@pytest.mark.parametrize("version", [0, 2, 255])
async def test_frames_of_another_envelope_version_are_refused(stack: Stack, version: int) -> None:
    [refused] = await exchange(stack.port, _restamp(HELLO, version))
    assert isinstance(refused, LinkRefused) and refused.code is RefuseCode.PROTOCOL_ERROR
    assert f"frame version {version} is not supported" in refused.text
    [result] = await exchange(stack.endpoint, _restamp(_connect_request(stack.port), version))
    assert isinstance(result, ConnectResult) and result.code is ConnectCode.BAD_REQUEST
    assert f"frame version {version} is not supported" in result.text
    assert await stack.login() == stack.expected


@pytest.mark.parametrize("suite", [0, 3, 255])
async def test_unknown_handshake_suite_is_refused_by_the_ped(stack: Stack, suite: int) -> None:
    hsm = HsmSideSession(rpv=RPV, hsm_serial=HSM_SERIAL)
    init = hsm.start_handshake()
    transport = await connect_via_pedclient(stack.endpoint, "127.0.0.1", stack.port)
    try:
        with trio.fail_after(30):
            await transport.begin_operation()
            await transport.send(Frame(E2EType.HANDSHAKE_INIT, bytes([suite]) + init.payload[1:]))
            answer = await transport.receive()
    finally:
        await transport.aclose()
    assert answer.type == E2EType.HANDSHAKE_REFUSED
    assert HandshakeRefusal.from_frame(answer).reason is RefuseReason.UNSUPPORTED
    with pytest.raises(Unsupported):
        hsm.receive_frame(answer)
    await stack.wait_no_links()
    assert await stack.login() == stack.expected


# ---------------------------------------------------- 12: operations outside a channel


async def _sealed_frames_of_a_recorded_session(stack: Stack, nursery: trio.Nursery) -> list[bytes]:
    recorder = EvilRelay(stack.port)
    await recorder.start(nursery)
    assert await stack.login(recorder.port) == stack.expected
    up, _ = recorder.connections[0]
    return [f[8:] for f in up.frames if f[3] == E2EType.SEALED]


async def test_operation_frames_before_any_handshake_serve_nothing(
    stack: Stack, nursery: trio.Nursery
) -> None:
    """Sealed requests of another session (a real read request and its goodbye) sent
    to the PED on a fresh link, each in its own operation: the PED serves nothing and
    answers each with a handshake refusal in the clear ("malformed handshake": it waits
    for a HANDSHAKE_INIT), and the same link then runs a genuine session."""
    sealed = await _sealed_frames_of_a_recorded_session(stack, nursery)
    await stack.wait_no_links()
    blue_reads = stack.server_log().count("key-read blue")
    reads = stack.key_reads()
    transport = await connect_via_pedclient(stack.endpoint, "127.0.0.1", stack.port)
    try:
        with trio.fail_after(60):
            for payload in sealed:
                await transport.begin_operation()
                await transport.send(Frame(E2EType.SEALED, payload))
                answer = await transport.receive()
                await transport.end_operation()
                assert answer.type == E2EType.HANDSHAKE_REFUSED
                refusal = HandshakeRefusal.from_frame(answer)
                assert refusal.reason is RefuseReason.UNSUPPORTED
                assert "malformed handshake" in refusal.detail
            assert stack.key_reads() == reads  # no key read: not even the orange one
            async with open_ped_session(transport, rpv=RPV, hsm_serial=HSM_SERIAL) as ped:
                result = await ped.read_secret(Color.BLUE, label="HSM SO")
                assert bytes(result.secret) == stack.expected
    finally:
        await transport.aclose()
    log = wait_for_log(stack.server_home / "pedserver.log", "key-read blue", count=blue_reads + 1)
    assert log.count("key-read blue") == blue_reads + 1  # the genuine read


@pytest.mark.parametrize("op", [OpType.READ_SECRET, OpType.IMPRINT, OpType.SHOW_MESSAGE])
async def test_plaintext_operation_frame_never_reaches_the_ped(stack: Stack, op: OpType) -> None:
    """Operation frames exist only inside sealed frames: a relay refuses one in the clear."""
    reads = stack.key_reads()
    request = _connect_request(stack.port)
    plain = encode_frame(Frame(op, bytes(40)))
    answer = await exchange(stack.endpoint, request, plain)
    assert isinstance(answer[0], ConnectResult) and answer[0].ok
    closed = answer[-1]
    assert isinstance(closed, Close) and closed.code is CloseCode.PROTOCOL_ERROR
    assert f"0x{int(op):02x}" in closed.text
    # Straight to pedserver's port after a hello: refused there too.
    answer = await exchange(stack.port, HELLO, plain)
    assert isinstance(answer[-1], Close) and answer[-1].code is CloseCode.PROTOCOL_ERROR
    await stack.wait_no_links()
    assert stack.key_reads() == reads
    assert await stack.login() == stack.expected
