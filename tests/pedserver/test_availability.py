"""Availability against whoever can reach pedserver's port (issue 15, section 7): holds of
the PED end, links without an RPV handshake end, a flood from one address refuses no
other, repeated log lines are summarised, an unconfirmed handshake is logged."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ped.link import (
    Busy,
    Close,
    CloseCode,
    EndToEnd,
    Keepalive,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
)
from ped.wire.framing import Frame
from tests.pedserver.test_server_timing import (
    Client,
    _connect,
    _server,
    handshake,
    pass_time,
)

INIT = Frame(0x20, b"init")


async def _keepalives_until_closed(client: Client, closes: list[Close]) -> None:
    """A link that only keeps itself alive (every 5 s) until pedserver closes it."""
    while True:
        await trio.sleep(5)
        await client.send(Keepalive(1))
        event = await client.receive_skipping_keepalives()
        if isinstance(event, Close):
            closes.append(event)
            return


async def _take_ped(client: Client) -> None:
    await client.send(OpBegin())
    assert isinstance(await client.receive_skipping_keepalives(), OpGranted)


async def test_a_hold_with_nothing_end_to_end_ends_at_op_start_timeout(autojump_clock):
    """The attack run's link: OP_BEGIN, then keepalives only, held the PED for ever."""
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, op_start_timeout=30, keepalive_interval=20)
        attacker = await _connect(nursery, server, LinkHello(client_name="trusted-hsm"))
        hsm = await _connect(nursery, server, LinkHello(client_name="hsm"))
        await attacker.receive()
        await hsm.receive()
        await _take_ped(attacker)
        start = trio.current_time()
        await hsm.send(OpBegin(wait_ms=0))
        busy = await hsm.receive()
        assert isinstance(busy, Busy) and "trusted-hsm" in busy.holder
        # Keepalives keep the link alive, never the hold.
        closes: list[Close] = []
        nursery.start_soon(_keepalives_until_closed, attacker, closes)
        await hsm.send(OpBegin(wait_ms=60_000))
        assert isinstance(await hsm.receive_skipping_keepalives(), OpGranted)
        assert trio.current_time() - start == pytest.approx(30, abs=1)
        await trio.testing.wait_all_tasks_blocked()
        assert closes and closes[0].code is CloseCode.PROTOCOL_ERROR
        assert 1 not in server.links
        nursery.cancel_scope.cancel()


async def test_the_hold_closes_with_a_reason(autojump_clock, caplog):
    caplog.set_level(logging.INFO, "pedserver")
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, op_start_timeout=30)
        attacker = await _connect(nursery, server, LinkHello(client_name="x"))
        await attacker.receive()
        await _take_ped(attacker)
        close = await attacker.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "held the PED for 30 s without sending it a frame" in close.text
        assert "held the PED for 30 s without sending it anything" in caplog.text
        nursery.cancel_scope.cancel()


async def test_a_hold_that_talks_to_the_ped_ends_at_max_op_hold(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, op_start_timeout=30, max_op_hold=980,
                                  keepalive_interval=20)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        await _take_ped(client)
        start = trio.current_time()
        await client.send(EndToEnd(INIT))
        assert (await client.receive()).frame.type == 0x21
        await pass_time(client, 900)  # an operator presenting keys slowly: still held
        assert 1 in server.links and server.relay.holder is server.links[1]
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "longer than 980 s" in close.text and "max_op_hold" in close.text
        assert trio.current_time() - start == pytest.approx(980, abs=1)
        await trio.testing.wait_all_tasks_blocked()
        assert server.relay.holder is None
        nursery.cancel_scope.cancel()


async def test_a_link_with_no_rpv_handshake_gets_a_short_deadline(autojump_clock):
    """32 hello-only links used to fill every slot for the whole idle timeout."""
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_links=2, rpv_handshake_timeout=120,
                                  idle_timeout=1800, keepalive_interval=20,
                                  socket_read_rsp_timeout=9999)
        idle = await _connect(nursery, server, LinkHello())
        real = await _connect(nursery, server, LinkHello())
        assert isinstance(await idle.receive(), LinkWelcome)
        assert isinstance(await real.receive(), LinkWelcome)
        start = trio.current_time()
        await handshake(real)
        close = await idle.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.IDLE_TIMEOUT
        assert "no RPV handshake within 120 s" in close.text
        assert trio.current_time() - start == pytest.approx(120, abs=1)
        # The slot is free again; the link that did its handshake stays.
        await pass_time(real, 200)
        assert list(server.links) == [2]
        again = await _connect(nursery, server, LinkHello())
        assert isinstance(await again.receive(), LinkWelcome)
        nursery.cancel_scope.cancel()


async def test_waiting_for_a_busy_ped_does_not_count_against_the_handshake(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, rpv_handshake_timeout=30, max_op_wait=60,
                                  op_start_timeout=600)
        holder = await _connect(nursery, server, LinkHello())
        waiter = await _connect(nursery, server, LinkHello())
        await holder.receive()
        await waiter.receive()
        await _take_ped(holder)
        await holder.send(EndToEnd(INIT))
        assert (await holder.receive()).frame.type == 0x21
        await waiter.send(OpBegin(wait_ms=60_000))
        await trio.sleep(50)  # longer than the handshake deadline: the waiter stays
        await holder.send(OpEnd())
        assert isinstance(await waiter.receive_skipping_keepalives(), OpGranted)
        await waiter.send(EndToEnd(INIT))
        assert (await waiter.receive_skipping_keepalives()).frame.type == 0x21
        assert sorted(server.links) == [1, 2]
        nursery.cancel_scope.cancel()


async def _silent(nursery: trio.Nursery, server, peer: str) -> Client:
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_connection, theirs, peer)
    await trio.testing.wait_all_tasks_blocked()
    return Client(ours)


async def test_a_flood_from_one_address_refuses_no_other(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_handshakes=128, max_handshakes_per_source=8)
        flood = [await _silent(nursery, server, f"10.0.0.66:{port}") for port in range(8)]
        assert server.admission.handshaking == 8
        extra = await _silent(nursery, server, "10.0.0.66:4000")
        refused = await extra.receive()
        assert isinstance(refused, LinkRefused) and refused.code is RefuseCode.TOO_MANY_LINKS
        assert "from this address" in refused.text
        other = await _silent(nursery, server, "[2001:db8::1]:5000")
        await other.send(LinkHello())
        assert isinstance(await other.receive(), LinkWelcome)
        assert server.admission.handshaking_from == {"10.0.0.66": 8}
        assert flood
        nursery.cancel_scope.cancel()
    assert server.admission.handshaking_from == {}


async def test_repeated_refusals_are_summarised(autojump_clock, caplog):
    caplog.set_level(logging.INFO, "pedserver")
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_handshakes_per_source=1,
                                  log_repeat_interval=10, log_repeat_burst=5)
        nursery.start_soon(server.repeated_lines.run)
        await _silent(nursery, server, "10.0.0.66:1")
        for port in range(2, 1002):
            refused = await (await _silent(nursery, server, f"10.0.0.66:{port}")).receive()
            assert isinstance(refused, LinkRefused)
        await trio.sleep(11)
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert sum(" refused: " in line for line in lines) == 5
    summaries = [line for line in lines if "line(s) not written" in line]
    assert summaries and "995 more 'too many connections in hello from one address'" in \
        summaries[0]


async def test_a_handshake_never_confirmed_is_logged(autojump_clock, caplog):
    """A replayed HANDSHAKE_INIT: the PED answers, nothing sealed ever follows."""
    caplog.set_level(logging.INFO, "pedserver")
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery)
        replayer = await _connect(nursery, server, LinkHello(client_name="pedclient"))
        await replayer.receive()
        await handshake(replayer)
        await replayer.send(Close(CloseCode.NORMAL, "bye"))
        await trio.testing.wait_all_tasks_blocked()
        assert "was never confirmed" in caplog.text
        assert "it was a replayed handshake" in caplog.text
        caplog.clear()
        # A real HSM: its first operation gets a sealed answer from the PED.
        hsm = await _connect(nursery, server, LinkHello(client_name="hsm"))
        await hsm.receive()
        await handshake(hsm)
        await _take_ped(hsm)
        await hsm.send(EndToEnd(Frame(0x23, b"request")))
        assert (await hsm.receive()).frame.type == 0x23
        await hsm.send(OpEnd())
        await hsm.send(Close(CloseCode.NORMAL, "bye"))
        await trio.testing.wait_all_tasks_blocked()
        assert "the HSM side holds the channel" in caplog.text
        assert "never confirmed" not in caplog.text
        nursery.cancel_scope.cancel()


async def test_a_flipped_length_fails_at_the_frame_timeout_saying_so(autojump_clock):
    """A length field that promises more than comes swallowed the frames behind it (the
    keepalives) and stalled the link 11-31 s before something failed."""
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, keepalive_interval=5)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        await _take_ped(client)
        sealed = client.conn.send(EndToEnd(Frame(0x23, b"x" * 100)))
        flipped = bytearray(sealed)
        flipped[6] ^= 0x04  # the length says 1124 bytes: 100 come
        start = trio.current_time()
        await client.stream.send_all(bytes(flipped))
        while True:
            event = await client.receive()  # the client goes on sending keepalives
            if isinstance(event, Close):
                break
            await client.stream.send_all(client.conn.send(Keepalive(7)))
        assert event.code is CloseCode.PROTOCOL_ERROR
        assert "incomplete 10 s after its first bytes" in event.text
        assert "length corrupted" in event.text
        assert trio.current_time() - start == pytest.approx(10, abs=0.5)
        nursery.cancel_scope.cancel()
