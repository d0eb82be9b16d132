"""pedserver's link rules on memory streams with a fake clock (no sockets, no waiting)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from ped.link import (
    Busy,
    Close,
    CloseCode,
    ConnectionLost,
    EndToEnd,
    Hop,
    Keepalive,
    KeepaliveAck,
    LinkConnection,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
    Side,
)
from ped.wire.framing import NEED_DATA, Frame
from pedserver.server import PedServer
from pedserver.settings import Settings
from tests.pedserver.fakes import FakeDriver


class Client:
    """The pedclient side of one link, driven by hand over a memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = LinkConnection(Hop.REMOTE, Side.INITIATOR)

    async def send(self, message) -> None:
        await self.stream.send_all(self.conn.send(message))

    async def receive(self):
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            self.conn.receive_data(data)

    async def receive_skipping_keepalives(self):
        while True:
            event = await self.receive()
            if isinstance(event, Keepalive):
                await self.send(KeepaliveAck(event.nonce))
                continue
            return event


async def pass_time(client: Client, seconds: float, step: float = 20) -> None:
    """Let *seconds* go by like a live but quiet pedclient: keepalives, no operations."""
    end = trio.current_time() + seconds
    while (left := end - trio.current_time()) > 0:
        await trio.sleep(min(step, left))
        await client.send(Keepalive(1))
        assert await client.receive_skipping_keepalives() == KeepaliveAck(1)


async def handshake(client: Client) -> None:
    """An RPV handshake as the fake PED plays it (links without one are closed early)."""
    await client.send(OpBegin())
    assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
    await client.send(EndToEnd(Frame(0x20, b"init")))
    assert (await client.receive_skipping_keepalives()).frame.type == 0x21
    await client.send(OpEnd())


async def _server(nursery: trio.Nursery, **settings) -> tuple[PedServer, FakeDriver]:
    driver = FakeDriver()
    server = PedServer(Settings(**settings), driver)
    await driver.open()
    server.device.info = driver.info
    return server, driver


async def _connect(nursery: trio.Nursery, server: PedServer, hello: LinkHello | None = None):
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_connection, theirs, "test-peer")
    client = Client(ours)
    if hello is not None:
        await client.send(hello)
    return client


async def test_idle_timeout_closes_the_link(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, idle_timeout=600, keepalive_interval=30)
        client = await _connect(nursery, server, LinkHello(idle_timeout=1800))
        welcome = await client.receive()
        assert isinstance(welcome, LinkWelcome) and welcome.idle_timeout == 600
        await handshake(client)
        start = trio.current_time()
        # Keepalives are answered but are not activity: the link still idles out.
        close = await client.receive_skipping_keepalives()
        assert isinstance(close, Close) and close.code is CloseCode.IDLE_TIMEOUT
        assert trio.current_time() - start == pytest.approx(600, abs=1)
        assert isinstance(await client.receive(), ConnectionLost)
        await trio.testing.wait_all_tasks_blocked()
        assert server.links == {}


async def test_shorter_idle_timeout_of_the_client_wins(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, idle_timeout=1800)
        client = await _connect(nursery, server, LinkHello(idle_timeout=45))
        welcome = await client.receive()
        assert welcome.idle_timeout == 45
        start = trio.current_time()
        close = await client.receive_skipping_keepalives()
        assert close.code is CloseCode.IDLE_TIMEOUT
        assert trio.current_time() - start == pytest.approx(45, abs=1)


async def test_operations_reset_idle_and_a_held_operation_never_idles(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(
            nursery, idle_timeout=100, keepalive_interval=20, socket_read_rsp_timeout=60
        )
        client = await _connect(nursery, server, LinkHello(idle_timeout=100))
        await client.receive()
        await pass_time(client, 90)
        await client.send(OpBegin())
        assert isinstance(await client.receive_skipping_keepalives(), OpGranted)
        await client.send(EndToEnd(Frame(0x20, b"init")))
        assert (await client.receive_skipping_keepalives()).frame.type == 0x21
        # Held for far longer than the idle timeout: the operator is slow, not idle.
        await pass_time(client, 500)
        await client.send(EndToEnd(Frame(0x23, b"ab")))
        assert (await client.receive_skipping_keepalives()).frame.payload == b"ba"
        await client.send(OpEnd())
        start = trio.current_time()
        close = await client.receive_skipping_keepalives()
        assert close.code is CloseCode.IDLE_TIMEOUT
        assert trio.current_time() - start == pytest.approx(100, abs=1)


async def test_silent_client_is_dropped_after_the_read_timeout(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(
            nursery, idle_timeout=9999, socket_read_rsp_timeout=120, keepalive_interval=30
        )
        client = await _connect(nursery, server, LinkHello(idle_timeout=9999))
        await client.receive()
        await client.send(OpBegin())
        assert isinstance(await client.receive(), OpGranted)
        await client.send(EndToEnd(Frame(0x20, b"init")))
        assert (await client.receive()).frame.type == 0x21
        start = trio.current_time()
        while True:  # read, but never answer keepalives: a half-dead peer
            event = await client.receive()
            if not isinstance(event, Keepalive):
                break
        assert event.code is CloseCode.PEER_UNRESPONSIVE
        assert trio.current_time() - start == pytest.approx(120, abs=1)
        # The lock died with the link.
        other = await _connect(nursery, server, LinkHello())
        await other.receive()
        await other.send(OpBegin())
        assert isinstance(await other.receive(), OpGranted)
        nursery.cancel_scope.cancel()


async def test_no_hello_in_time(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, hello_timeout=10)
        client = await _connect(nursery, server)
        start = trio.current_time()
        refused = await client.receive()
        assert isinstance(refused, LinkRefused) and "no link hello in time" in refused.text
        assert trio.current_time() - start == pytest.approx(10, abs=0.5)
        assert isinstance(await client.receive(), ConnectionLost)


async def test_busy_and_bounded_wait(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_op_wait=60)
        a = await _connect(nursery, server, LinkHello(client_name="a"))
        b = await _connect(nursery, server, LinkHello(client_name="b"))
        await a.receive()
        await b.receive()
        await a.send(OpBegin())
        assert isinstance(await a.receive(), OpGranted)
        await a.send(EndToEnd(Frame(0x20, b"init")))  # a real hold talks to the PED
        assert (await a.receive()).frame.type == 0x21
        await b.send(OpBegin(wait_ms=0))
        busy = await b.receive()
        assert isinstance(busy, Busy) and "link 1" in busy.holder and "(a)" in busy.holder
        # Asking to wait 10 minutes is capped at max_op_wait (60 s) and answered Busy.
        start = trio.current_time()
        await b.send(OpBegin(wait_ms=600_000))
        assert isinstance(await b.receive_skipping_keepalives(), Busy)
        assert trio.current_time() - start == pytest.approx(60, abs=1)
        # A wait that the holder's OpEnd satisfies is granted.
        await b.send(OpBegin(wait_ms=30_000))
        await trio.sleep(5)
        await a.send(OpEnd())
        assert isinstance(await b.receive_skipping_keepalives(), OpGranted)
        nursery.cancel_scope.cancel()


async def test_refusals(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, max_links=1)
        future = await _connect(nursery, server, LinkHello(min_version=7, max_version=9))
        refused = await future.receive()
        assert isinstance(refused, LinkRefused)
        assert refused.code is RefuseCode.UNSUPPORTED_VERSION
        assert "upgrade the older side" in refused.text
        first = await _connect(nursery, server, LinkHello())
        assert isinstance(await first.receive(), LinkWelcome)
        second = await _connect(nursery, server, LinkHello())
        refused = await second.receive()
        assert refused.code is RefuseCode.TOO_MANY_LINKS
        nursery.cancel_scope.cancel()


async def test_garbage_after_the_welcome_closes_only_that_link(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery)
        good = await _connect(nursery, server, LinkHello())
        bad = await _connect(nursery, server, LinkHello())
        await good.receive()
        await bad.receive()
        await bad.stream.send_all(b"RP\x01\x99\x00\x00\x00\x00")  # unknown type
        close = await bad.receive()
        assert close.code is CloseCode.PROTOCOL_ERROR and "0x99" in close.text
        await good.send(OpBegin())
        assert isinstance(await good.receive(), OpGranted)
        assert list(server.links) == [1]
        nursery.cancel_scope.cancel()


async def test_stop_closes_links_with_a_reason(autojump_clock):
    async with trio.open_nursery() as nursery:
        driver = FakeDriver()
        server = PedServer(Settings(ip="127.0.0.1", port=0), driver)
        await nursery.start(server.serve)
        client = await _connect(nursery, server, LinkHello())
        await client.receive()
        await client.send(OpBegin())
        assert isinstance(await client.receive(), OpGranted)
        server.request_stop("test")
        close = await client.receive()
        assert close.code is CloseCode.SHUTTING_DOWN
        assert isinstance(await client.receive(), ConnectionLost)
    assert driver.closed


async def test_a_client_that_stops_reading_is_dropped(autojump_clock):
    async with trio.open_nursery() as nursery:
        server, _ = await _server(nursery, keepalive_interval=30)
        ours, theirs = trio.testing.lockstep_stream_pair()  # writes wait for the reader
        nursery.start_soon(server.handle_connection, theirs, "stuck-peer")
        client = Client(ours)
        await client.send(LinkHello())
        assert isinstance(await client.receive(), LinkWelcome)
        await trio.testing.wait_all_tasks_blocked()
        assert list(server.links) == [1]
        await trio.sleep(30 + 60 + 5)  # first keepalive, then the send timeout
        assert server.links == {}
        nursery.cancel_scope.cancel()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6), st.booleans())
def test_any_bytes_after_a_good_hello_never_escape_the_handler(chunks, hello_first):
    """Whatever a peer sends, handle_connection ends on its own and cleans up."""

    async def main() -> None:
        driver = FakeDriver()
        server = PedServer(Settings(), driver)
        await driver.open()
        server.device.info = driver.info
        ours, theirs = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, theirs, "fuzz")
            if hello_first:
                await ours.send_all(LinkConnection(Hop.REMOTE, Side.INITIATOR).send(LinkHello()))
            for chunk in chunks:
                try:
                    await ours.send_all(chunk)
                except trio.BrokenResourceError:
                    break
            await ours.aclose()
        assert server.links == {} and server.admission.handshaking == 0
        assert driver.owner is None

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
