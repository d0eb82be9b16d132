"""A hold of the PED ends at the operation timeout its OP_BEGIN announced plus a grace
(issue 15, section 7): version 2 links announce the HSM's pedo, version 1 links keep
pedserver's fixed ``max_op_hold``, and a garbage value closes the link saying why."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from ped.link import (
    Close,
    CloseCode,
    EndToEnd,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
)
from ped.wire.codec import Writer
from ped.wire.framing import Frame, encode_frame
from pedserver.deadlines import OP_HOLD_GRACE
from tests.pedserver.test_server_timing import Client, _connect, _server, pass_time

INIT = Frame(0x20, b"init")


async def _hold_and_talk(client: Client, begin: OpBegin) -> float:
    """Take the PED with *begin*, send it a frame; the time the hold was granted."""
    await client.send(begin)
    assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
    granted = trio.current_time()
    await client.send(EndToEnd(INIT))
    assert (await client.receive_skipping_keepalives()).frame.type == 0x21
    return granted


async def test_a_link_that_announces_60_s_is_cut_at_90_s(autojump_clock, caplog):
    caplog.set_level(logging.INFO, "pedserver")
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_op_hold=980, keepalive_interval=20)
        client = await _connect(nursery, server, LinkHello())
        welcome = await client.receive()
        assert isinstance(welcome, LinkWelcome) and welcome.version >= 2
        granted = await _hold_and_talk(client, OpBegin(0, op_timeout=60))
        assert "announces an operation timeout of 60 s; a hold of the PED ends after 90 s" \
            in caplog.text
        await pass_time(client, 80)  # still within the HSM's own timeout and the grace
        assert server.relay.holder is server.links[1]
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert trio.current_time() - granted == pytest.approx(60 + OP_HOLD_GRACE, abs=1)
        assert "longer than 90 s" in close.text
        assert "operation timeout of 60 s" in close.text
        await trio.testing.wait_all_tasks_blocked()
        assert server.relay.holder is None
        nursery.cancel_scope.cancel()


async def test_an_announced_timeout_never_outlasts_max_op_hold(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_op_hold=300, keepalive_interval=20)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        granted = await _hold_and_talk(client, OpBegin(0, op_timeout=5000))
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and "max_op_hold" in close.text
        assert trio.current_time() - granted == pytest.approx(300, abs=1)
        nursery.cancel_scope.cancel()


async def test_an_old_form_op_begin_keeps_the_fixed_bound(autojump_clock, caplog):
    """A version 1 peer (an older pedclient) cannot announce: max_op_hold bounds it."""
    caplog.set_level(logging.INFO, "pedserver")
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_op_hold=980, keepalive_interval=20)
        client = await _connect(nursery, server, LinkHello(min_version=1, max_version=1))
        welcome = await client.receive()
        assert isinstance(welcome, LinkWelcome) and welcome.version == 1
        granted = await _hold_and_talk(client, OpBegin(0))
        assert "announces no operation timeout; a hold of the PED ends after max_op_hold " \
            "(980 s)" in caplog.text
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "longer than 980 s" in close.text and "max_op_hold" in close.text
        assert trio.current_time() - granted == pytest.approx(980, abs=1)
        nursery.cancel_scope.cancel()


async def test_each_hold_has_its_own_bound(autojump_clock):
    """The bound is the hold's: a later OP_BEGIN without the field goes back to the
    fixed bound, one with another value gets that value."""
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_op_hold=980, keepalive_interval=20)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        await _hold_and_talk(client, OpBegin(0, op_timeout=60))
        await client.send(OpEnd())
        granted = await _hold_and_talk(client, OpBegin(0, op_timeout=200))
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and "longer than 230 s" in close.text
        assert trio.current_time() - granted == pytest.approx(230, abs=1)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("value", [0, 100_000, 0xFFFFFFFF])
async def test_a_garbage_operation_timeout_is_refused_with_a_reason(autojump_clock, value):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        payload = Writer().u32(0).u32(value).getvalue()
        await client.stream.send_all(encode_frame(Frame(OpBegin.TYPE, payload)))
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "operation timeout" in close.text
        await trio.testing.wait_all_tasks_blocked()
        assert server.relay.holder is None and 1 not in server.links
        nursery.cancel_scope.cancel()


async def test_an_announcement_on_a_version_1_link_is_refused(autojump_clock):
    """A version 1 link has no such field: a peer that sends it anyway broke the rules."""
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery)
        client = await _connect(nursery, server, LinkHello(min_version=1, max_version=1))
        await client.receive()
        payload = Writer().u32(0).u32(60).getvalue()
        await client.stream.send_all(encode_frame(Frame(OpBegin.TYPE, payload)))
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "operation timeout" in close.text and "version 1" in close.text
        nursery.cancel_scope.cancel()
