"""Peer-to-peer links never idle out (pedserver's rule, on memory streams, fake clock)."""

from __future__ import annotations

import trio
import trio.testing

from ped.link import Close, CloseCode, LinkHello, LinkWelcome, OpBegin, OpEnd, OpGranted
from tests.pedserver.test_server_timing import Client, _server, pass_time


async def test_a_peer_link_outlives_any_idle_timeout(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, idle_timeout=60, keepalive_interval=20,
                                  socket_read_rsp_timeout=60)
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(
            lambda: server.handle_connection(theirs, "appliance hsm1", idle_timeout=False))
        client = Client(ours)
        await client.send(LinkHello(idle_timeout=30))
        welcome = await client.receive()
        assert isinstance(welcome, LinkWelcome) and welcome.idle_timeout == 30
        (link,) = server.show()["links"]
        assert link["mode"] == "peer-to-peer"
        await pass_time(client, 10 * 3600)  # ten hours without an operation: still up
        await client.send(OpBegin())
        assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
        await client.send(OpEnd())
        await client.send(Close(CloseCode.NORMAL, "done"))
        await trio.testing.wait_all_tasks_blocked()
        assert server.links == {}


async def test_the_same_link_in_standard_mode_idles_out(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, idle_timeout=60, keepalive_interval=20,
                                  socket_read_rsp_timeout=60)
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_connection, theirs, "10.0.0.1:5555")
        client = Client(ours)
        await client.send(LinkHello(idle_timeout=30))
        assert (await client.receive()).idle_timeout == 30
        assert server.show()["links"][0]["mode"] == "standard"
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.IDLE_TIMEOUT
