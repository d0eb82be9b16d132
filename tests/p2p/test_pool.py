"""pedclient's pool of parked peer connections, on memory streams (no sockets, no TLS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from ped.link import ConnectCode
from ped.tls import PinStore, regenerate_identity
from pedclient.dial import DialError
from pedclient.peer import MAX_SPARES, PeerPool


@pytest.fixture
def pool(tmp_path: Path) -> tuple[PeerPool, str]:
    ws = regenerate_identity(tmp_path / "ws", "ws")
    store = PinStore(tmp_path / "hsm", program="pedclient")
    store.register("ws1", ws.certificate_pem)
    return PeerPool(store), ws.fingerprint


async def _park(nursery: trio.Nursery, pool: PeerPool, fp: str):
    ours, theirs = trio.testing.memory_stream_pair()
    nursery.start_soon(pool.park, theirs, "ws1", fp)
    await trio.testing.wait_all_tasks_blocked()
    return ours


async def test_each_request_gets_its_own_connection_and_it_stays_open(pool) -> None:
    peers, fp = pool
    async with trio.open_nursery() as nursery:
        far = [await _park(nursery, peers, fp) for _ in range(2)]
        assert peers.show()[0] | {"last_seen": None} == {
            "name": "ws1", "registered": True, "fingerprint": fp, "address": "?",
            "state": "connected", "spares": 2, "links": 0, "last_seen": None,
        }
        first = await peers.take("ws1", 5)
        second = await peers.take("ws1", 5)
        assert peers.show()[0]["links"] == 2 and peers.show()[0]["spares"] == 0
        await first.send_all(b"hello 1")  # the parked reader did not eat anything
        assert await far[0].receive_some() == b"hello 1"
        await far[1].send_all(b"welcome 2")
        assert await second.receive_some() == b"welcome 2"
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert peers.show()[0]["links"] == 1
        await second.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert peers.show()[0]["state"] == "not connected"
        nursery.cancel_scope.cancel()


async def test_a_closed_spare_leaves_the_pool(pool) -> None:
    peers, fp = pool
    async with trio.open_nursery() as nursery:
        far = await _park(nursery, peers, fp)
        await far.aclose()  # pedserver stopped
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(DialError) as failed:
            await peers.take("ws1", 5)
        assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
        assert "pedserver mode connect" in failed.value.text
        nursery.cancel_scope.cancel()


async def test_spares_are_bounded(pool) -> None:
    peers, fp = pool
    async with trio.open_nursery() as nursery:
        for _ in range(MAX_SPARES):
            await _park(nursery, peers, fp)
        extra = await _park(nursery, peers, fp)
        assert await extra.receive_some() == b""  # closed: pedserver backs off
        assert peers.show()[0]["spares"] == MAX_SPARES
        nursery.cancel_scope.cancel()


async def test_a_request_waits_for_the_next_spare_while_links_are_in_use(
    autojump_clock, pool
) -> None:
    peers, fp = pool
    async with trio.open_nursery() as nursery:
        await _park(nursery, peers, fp)
        held = await peers.take("ws1", 5)
        got: list[trio.abc.Stream] = []

        async def second() -> None:
            got.append(await peers.take("ws1", 30))

        nursery.start_soon(second)
        await trio.sleep(2)  # pedserver dials the next spare
        assert got == []
        await _park(nursery, peers, fp)
        await trio.testing.wait_all_tasks_blocked()
        assert len(got) == 1
        with pytest.raises(DialError) as failed:  # none comes: a clear timeout
            await peers.take("ws1", 10)
        assert failed.value.code is ConnectCode.TIMEOUT
        await held.aclose()
        await got[0].aclose()
        nursery.cancel_scope.cancel()


async def test_unknown_names_say_how_to_register(pool) -> None:
    peers, _ = pool
    with pytest.raises(DialError) as failed:
        await peers.take("nobody", 5)
    assert "pedclient peer register" in failed.value.text
