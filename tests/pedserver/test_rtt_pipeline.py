"""pedserver and frames pipelined behind OP_BEGIN (link version 3, issue 20 section 3).

They wait, unread, until the hold is granted and then reach the PED in order; after a
Busy none reaches it; on a version 2 link they are a protocol error.
"""

from __future__ import annotations

import trio
import trio.testing

from ped.link import (
    Busy,
    Close,
    CloseCode,
    EndToEnd,
    LinkHello,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
)
from ped.wire.framing import Frame, encode_frame
from tests.pedserver.test_server_timing import _connect, _server

INIT = Frame(0x20, b"init")
SEALED = [Frame(0x23, b"request"), Frame(0x23, b"cancel")]


async def test_pipelined_frames_wait_for_the_grant_then_reach_the_ped_in_order(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, driver = await _server(nursery)
        holder = await _connect(nursery, server, LinkHello(1, 3))
        assert (await holder.receive()).version == 3
        await holder.send(OpBegin())
        assert isinstance(await holder.receive_skipping_keepalives(), OpGranted)
        client = await _connect(nursery, server, LinkHello(1, 3))
        await client.receive()
        # Behind an OP_BEGIN that waits 10 s for the PED: nothing reaches it meanwhile.
        for message in (OpBegin(10_000), EndToEnd(INIT)):
            await client.send(message)
        await trio.sleep(5)
        assert driver.device_in == []
        await holder.send(OpEnd())
        assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
        assert (await client.receive_skipping_keepalives()).frame.type == 0x21
        assert driver.device_in == [encode_frame(INIT)]
        nursery.cancel_scope.cancel()


async def test_after_busy_pipelined_frames_never_reach_the_ped(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, driver = await _server(nursery)
        holder = await _connect(nursery, server, LinkHello(1, 3))
        await holder.receive()
        await holder.send(OpBegin())
        assert isinstance(await holder.receive_skipping_keepalives(), OpGranted)
        client = await _connect(nursery, server, LinkHello(1, 3))
        await client.receive()
        await client.send(OpBegin(0))
        for frame in SEALED:
            await client.send(EndToEnd(frame))
        assert isinstance(await client.receive_skipping_keepalives(), Busy)
        await trio.testing.wait_all_tasks_blocked()
        assert driver.device_in == []  # discarded, and the link is still open
        await holder.send(OpEnd())
        await trio.testing.wait_all_tasks_blocked()
        # The same bytes again behind the next OP_BEGIN: delivered, once, in order.
        await client.send(OpBegin(0))
        for frame in SEALED:
            await client.send(EndToEnd(frame))
        assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
        await client.receive_skipping_keepalives()
        await client.receive_skipping_keepalives()
        assert driver.device_in == [encode_frame(frame) for frame in SEALED]
        nursery.cancel_scope.cancel()


async def test_a_version_2_link_that_pipelines_into_a_busy_ped_is_closed(autojump_clock):
    """Why nobody pipelines on an older link: after its Busy, a version 2 pedserver
    takes the frame for one sent with no hold (and a version 2 pedserver's PED would
    never get it either)."""
    async with trio.open_nursery() as nursery:
        server, driver = await _server(nursery)
        holder = await _connect(nursery, server, LinkHello(1, 3))
        await holder.receive()
        await holder.send(OpBegin())
        assert isinstance(await holder.receive_skipping_keepalives(), OpGranted)
        client = await _connect(nursery, server, LinkHello(1, 2))
        welcome = await client.receive()
        assert isinstance(welcome, LinkWelcome) and welcome.version == 2
        await client.send(OpBegin(0))
        client.conn.version = 3  # a peer that pipelines although it negotiated version 2
        await client.send(EndToEnd(INIT))
        assert isinstance(await client.receive_skipping_keepalives(), Busy)
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.PROTOCOL_ERROR
        assert "operation state is free" in close.text
        assert driver.device_in == []
        nursery.cancel_scope.cancel()
