"""OP_BEGIN's announced operation timeout (link version 2): its bytes, who may send it,
and that the HSM side announces its pedo only where the far end understands it."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from keys.colors import Color
from ped.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError
from ped.hsm_api import open_ped_session
from ped.link import (
    ConnectCode,
    ConnectResult,
    DeviceSummary,
    Hop,
    LinkConnection,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpGranted,
    Side,
    connect_via_pedclient,
    decode,
    encode,
)
from ped.ops import events as ev
from ped.wire.codec import Writer
from ped.wire.framing import Frame
from pedclient.relay import _for_server
from tests.link.test_hsm_side import scripted_endpoint
from tests.ped.ops.memory import TinyPed, answer_secret, transport_pair

RPV = bytes(range(32))


def test_the_field_is_optional_on_the_wire():
    assert encode(OpBegin(5000)).payload == bytes.fromhex("00001388")
    assert encode(OpBegin(5000, 920)).payload == bytes.fromhex("00001388" "00000398")
    assert decode(Frame(0x04, bytes.fromhex("00001388"))) == OpBegin(5000)
    assert decode(Frame(0x04, bytes.fromhex("0000138800000398"))) == OpBegin(5000, 920)


@pytest.mark.parametrize("value", [0, 100_000, 0xFFFFFFFF])
def test_a_garbage_timeout_is_refused_both_ways(value):
    with pytest.raises(FieldOutOfRange, match="operation timeout"):
        decode(Frame(0x04, Writer().u32(0).u32(value).getvalue()))
    with pytest.raises(LocalProtocolError, match="operation timeout"):
        encode(OpBegin(0, value))


def test_half_a_field_is_refused():
    with pytest.raises(RemoteProtocolError):
        decode(Frame(0x04, bytes.fromhex("0000138800")))


def _open_pair(version: int) -> tuple[LinkConnection, LinkConnection]:
    client = LinkConnection(Hop.REMOTE, Side.INITIATOR)
    server = LinkConnection(Hop.REMOTE, Side.RESPONDER)
    server.receive_data(client.send(LinkHello(1, version)))
    server.next_event()
    client.receive_data(server.send(LinkWelcome(version, 900)))
    client.next_event()
    return client, server


def test_only_a_version_2_link_carries_it():
    client, server = _open_pair(2)
    server.receive_data(client.send(OpBegin(0, 60)))
    assert server.next_event() == OpBegin(0, 60)
    client, server = _open_pair(1)
    with pytest.raises(LocalProtocolError, match="version 1"):
        client.send(OpBegin(0, 60))
    assert client.send(OpBegin(0))  # the state did not move: the old form still goes
    client, server = _open_pair(1)
    server.receive_data(bytes.fromhex("5250010400000008") + bytes.fromhex("000000000000003c"))
    with pytest.raises(RemoteProtocolError, match="operation timeout"):
        server.next_event()


def test_pedclient_strips_it_for_a_version_1_pedserver():
    assert _for_server(OpBegin(0, 60), 1) == OpBegin(0)
    assert _for_server(OpBegin(0, 60), 2) == OpBegin(0, 60)
    assert _for_server(OpBegin(7), 2) == OpBegin(7)


def _result(version: int) -> ConnectResult:
    return ConnectResult(ConnectCode.OK, "up", version, 900, "ws", DeviceSummary())


@pytest.mark.parametrize("version, announced", [(2, 61), (1, None)])
async def test_the_hsm_side_announces_only_on_version_2(home, version, announced):
    seen: list[Any] = []

    async def script(receive, send, stream):
        await receive()
        await send(_result(version))
        seen.append(await receive())
        await send(OpGranted())
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        ped = await connect_via_pedclient(home / "c.sock", "ws", 1503)
        ped.announce_op_timeout(60.2)  # whole seconds, rounded up
        await ped.begin_operation()
    assert seen == [OpBegin(0, announced)]


class _Announcing:
    """A transport that records what the session announces before each hold."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.announced: list[float] = []

    def announce_op_timeout(self, seconds: float) -> None:
        self.announced.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_the_session_announces_each_operations_timeout():
    hsm_t, ped_t = transport_pair()
    transport = _Announcing(hsm_t)
    ped = TinyPed(RPV, {ev.ReadSecretRequested: answer_secret})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ped.run, ped_t)
        async with open_ped_session(transport, rpv=RPV, hsm_serial="1", op_timeout=300) as session:
            with await session.read_secret(Color.BLUE, bytes(16)):
                pass
            with await session.read_secret(Color.BLUE, bytes(16), op_timeout=45):
                pass
    # the handshake, then each operation (its own timeout, else the session's)
    assert transport.announced == [300, 300, 45]
