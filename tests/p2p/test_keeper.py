"""pedserver's peer keeper on a fake clock: backoff, slow retries after a refusal, the
retry-now of ``mode connect``, disconnect, and when the next spare is dialled.  The
dialler is replaced by a recorder (the real handshakes are tested through the daemons in
test_refusals/test_peer_link)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

import pedserver.peer as peer_module
from ped.daemon.control import Progress
from ped.tls import (
    CertificateSide,
    PeerRejected,
    PeerUnreachable,
    PinStore,
    RejectReason,
    regenerate_identity,
)
from pedserver.appliances import ApplianceState
from pedserver.peer import PeerManager
from pedserver.server import PedServer
from pedserver.settings import Settings
from tests.pedserver.fakes import FakeDriver


class Dialler:
    """Stands in for open_pinned_tls_client: fails as told, records when it was called."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.error: Exception = PeerUnreachable("cannot connect to 192.0.2.1:9697: refused")

    async def __call__(self, *args: object, **kwargs: object) -> trio.SSLStream:  # type: ignore[type-arg]
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        raise self.error


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PeerManager, Dialler]:
    hsm = regenerate_identity(tmp_path / "hsm", "hsm")
    PinStore(tmp_path / "ws", program="pedserver").register(
        "hsm1", hsm.certificate_pem, ip="192.0.2.1")
    dialler = Dialler()
    monkeypatch.setattr(peer_module, "open_pinned_tls_client", dialler)
    server = PedServer(Settings(ip="127.0.0.1", port=0, device="fake:ped"), FakeDriver())
    peers = PeerManager(server, tmp_path / "ws")
    peers.install()
    return peers, dialler


def _gaps(calls: list[float]) -> list[float]:
    return [round(b - a) for a, b in itertools.pairwise(calls)]


async def test_unreachable_backs_off_to_a_minute(autojump_clock, manager) -> None:
    peers, dialler = manager
    async with trio.open_nursery() as nursery:
        await nursery.start(peers.run)
        record = await peers.connect("hsm1")
        await trio.sleep(300)
        assert _gaps(dialler.calls)[:9] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
        assert record.state is ApplianceState.RETRYING and "refused" in record.last_error
        shown = peers.server.show()["peer_links"]
        assert shown[0]["name"] == "hsm1" and shown[0]["state"] == "retrying"
        nursery.cancel_scope.cancel()


async def test_a_refusal_retries_slowly_and_connect_again_retries_now(
    autojump_clock, manager
) -> None:
    peers, dialler = manager
    dialler.error = PeerRejected(
        "pedclient at 192.0.2.1:9697 refused our certificate AB: unknown there; fix: ...",
        side=CertificateSide.OURS, reason=RejectReason.UNKNOWN, fingerprint="AB",
        peer="192.0.2.1:9697",
        fix="...")
    async with trio.open_nursery() as nursery:
        await nursery.start(peers.run)
        record = await peers.connect("hsm1")
        await trio.sleep(150)
        assert _gaps(dialler.calls) == [60, 60]
        assert record.state is ApplianceState.REFUSED
        assert "refused our certificate" in record.last_error
        before = len(dialler.calls)
        at = trio.current_time()
        again = await peers.connect("hsm1")  # the operator fixed it and asks again
        assert again is record
        await record.first_outcome.wait()
        assert len(dialler.calls) == before + 1 and dialler.calls[-1] == pytest.approx(at)
        assert await peers.disconnect("hsm1") == 0
        await trio.testing.wait_all_tasks_blocked()
        assert record.state is ApplianceState.DISCONNECTED and peers.show() == []
        calls = len(dialler.calls)
        await trio.sleep(600)
        assert len(dialler.calls) == calls  # the keeper is gone
        nursery.cancel_scope.cancel()


async def test_connect_answers_with_the_first_outcome(autojump_clock, manager) -> None:
    peers, _ = manager
    async with trio.open_nursery() as nursery:
        await nursery.start(peers.run)
        answer = await peers.server.extra_commands["connect"]({"name": "hsm1"}, Progress(None))
        assert answer["state"] == "retrying" and "refused" in answer["error"]
        nursery.cancel_scope.cancel()


class Spares:
    """Stands in for `PeerManager._dial`: each dial gives a connected memory stream pair
    (pedserver's end to the keeper, pedclient's end kept here) and notes the event."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.far: list[trio.abc.Stream] = []
        self.dialled = trio.Event()

    async def __call__(self, record: object) -> tuple[trio.abc.Stream, object]:
        ours, theirs = trio.testing.memory_stream_pair()
        self.far.append(theirs)
        self.events.append("dial")
        self.dialled.set()
        self.dialled = trio.Event()
        return ours, _FakeIdentity()


class _FakeIdentity:
    fingerprint = "AB:CD"


def _fake_link(events: list[str], replies: int) -> object:
    """A `handle_connection` that answers the first bytes with *replies* messages (an
    opening exchange), -1 for a link that never stops talking."""

    async def handle(stream: trio.abc.Stream, peer: str, *, idle_timeout: bool) -> None:
        await stream.receive_some(100)
        n = 0
        while replies < 0 or n < replies:
            await trio.sleep(0.005)
            await stream.send_all(b"reply")
            events.append("link")
            n += 1
        await trio.sleep_forever()

    return handle


async def _take_first_spare(
    nursery: trio.Nursery, peers: PeerManager, monkeypatch: pytest.MonkeyPatch,
    handle: object, events: list[str],
) -> Spares:
    """Run *peers* with `Spares` as its dialler and *handle* as pedserver's link
    handler; pedclient takes the first spare (speaks on it).  The spares, once it did."""
    spares = Spares(events)
    await nursery.start(peers.run)
    monkeypatch.setattr(peers, "_dial", spares)
    monkeypatch.setattr(peers.server, "handle_connection", handle)
    await peers.connect("hsm1")
    while not spares.far:
        await spares.dialled.wait()
    await trio.testing.wait_all_tasks_blocked()
    events.append("taken")
    await spares.far[0].send_all(b"hello")  # pedclient speaks: the spare is taken
    return spares


async def test_the_next_spare_waits_for_the_new_links_opening_exchange(
    autojump_clock, manager, monkeypatch
) -> None:
    """The replacement's TLS handshake must not compete with the HSM's hello and RPV
    handshake: it is dialled after the link's opening exchange, not when it starts."""
    peers, _ = manager
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        spares = await _take_first_spare(
            nursery, peers, monkeypatch, _fake_link(events, 8), events)
        await spares.dialled.wait()
        assert events == ["dial", "taken", *["link"] * 8, "dial"]
        nursery.cancel_scope.cancel()


async def test_a_link_that_keeps_talking_does_not_hold_back_the_next_spare(
    autojump_clock, manager, monkeypatch
) -> None:
    peers, _ = manager
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        spares = await _take_first_spare(
            nursery, peers, monkeypatch, _fake_link(events, -1), events)
        await spares.dialled.wait()
        assert events[:2] == ["dial", "taken"] and events[-1] == "dial"
        talking = len(events)
        while len(events) == talking:  # and the link goes on
            await trio.sleep(0.01)
        assert events[-1] == "link"
        assert peers.show()[0]["spare"] and peers.show()[0]["links"] == 1
        nursery.cancel_scope.cancel()


async def test_a_link_closed_at_once_gets_its_replacement_at_once(
    autojump_clock, manager, monkeypatch
) -> None:
    peers, _ = manager
    events: list[str] = []

    async def handle(stream: trio.abc.Stream, peer: str, *, idle_timeout: bool) -> None:
        await stream.receive_some(100)
        events.append("closed")
        await stream.aclose()

    peers.replace_quiet = peers.replace_max = 3600.0  # the settling timers never end
    async with trio.open_nursery() as nursery:
        spares = await _take_first_spare(nursery, peers, monkeypatch, handle, events)
        with trio.move_on_after(60) as waited:
            await spares.dialled.wait()
        assert not waited.cancelled_caught  # a link already gone needs no settling
        assert events == ["dial", "taken", "closed", "dial"]
        nursery.cancel_scope.cancel()
