"""A PED busy with another HSM's operation does not cost pedhsm its remote link.

Two real HSMs (`hsm.engine.Hsm` with their `hsm.pedlink.PedRouter`s), in this process,
share one emulated PED behind a real pedserver and pedclient.  HSM A's operation waits at
the PED (its operator stepped away); HSM B's login waits its 15 s (`hsm.pedlink.BUSY_WAIT`,
mock time) and is refused "busy": not counted, audited as such, the link stays connected
(no "link lost", no "ped disconnected").  Once A's operation ends, B's login succeeds on
the same session, without a new connect or orange key.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from hsm import control
from hsm.apiport import PedBusyRefusal, PedLinkLost, map_error
from hsm.clock import ManualClock
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.linkloss import LinkLoss
from hsm.pedlink import BUSY_WAIT, PedRouter
from hsm.store import Store
from keys import Keyring, ShareCollector, new_keyset, wipe
from keys.colors import Color
from keys.image import load_image
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.panel import PromptKind
from ped.device.emulated.server import EmulatedPed
from ped.transport import PedBusy
from pedclient.client import PedClient
from pedclient.settings import Settings as ClientSettings
from pedserver.server import PedServer
from pedserver.settings import Settings as ServerSettings
from pedtools.fakes.inprocess import InProcessPedDriver
from tests.pedserver.fakes import short_tmp


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jump only once nothing has moved for a few real milliseconds: bytes on loopback
    # sockets are seen before the clock jumps (as in tests/link/rtt_rig.py).
    return trio.testing.MockClock(autojump_threshold=0.01)


@attrs.define
class Host:
    """One HSM, its router, what its shell was told and every text it answered."""

    hsm: Hsm
    router: PedRouter
    store: Store
    master: MasterKey
    drops: list[LinkLoss] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    said: list[str] = attrs.Factory(list)

    async def cmd(self, name: str, **args: Any) -> dict[str, Any]:
        try:
            reply = await control.run(control.BY_NAME[name], self.hsm, args, self.notes.append)
        except Exception as exc:
            self.said.append(str(exc))
            raise
        self.said.append(str(reply.get("text", "")))
        return reply

    async def show(self) -> str:
        return str((await self.cmd("hsm.ped.show"))["text"])

    async def attempts_left(self) -> int:
        return int((await self.cmd("hsm.show"))["data"]["so_attempts_left"])

    def audit(self) -> str:
        return self.hsm.state.audit.path.read_text()


class Operator:
    """The PED's operator: answers every prompt from the keyring while present."""

    def __init__(self, ped: EmulatedPed, keys: Path, nursery: trio.Nursery) -> None:
        self._ped, self._keys, self._nursery = ped, keys, nursery
        self._scope: trio.CancelScope | None = None

    def arrive(self) -> None:
        scope = self._scope = trio.CancelScope()

        async def answer() -> None:
            with scope:
                await AutoOperator(self._ped.panel, self._keys).run()

        self._nursery.start_soon(answer)

    def leave(self) -> None:
        assert self._scope is not None
        self._scope.cancel()


@attrs.define
class Site:
    a: Host
    b: Host
    server: PedServer
    ped: EmulatedPed
    operator: Operator
    keys: Path
    connect: dict[str, Any]


def _host(home: Path, serial: str, endpoint: Path, rpv: bytes) -> Host:
    home.mkdir(mode=0o700)
    store, master = Store(home), MasterKey.load_or_create(home)
    hsm: Hsm | None = None
    drops: list[LinkLoss] = []

    def commands() -> Any:
        assert hsm is not None
        return hsm.ped

    def dropped(loss: LinkLoss) -> None:
        drops.append(loss)
        commands().link_dropped(loss)

    router = PedRouter(
        local_uri=None,
        pedclient_socket=str(endpoint),
        serial=serial,
        timeouts=lambda: commands().timeouts(),
        on_drop=dropped,
        hsm_rpv=lambda: commands().rpv_if_set(),
    )
    hsm = Hsm(home, store, master, ManualClock(), router, serial)
    hsm.power_on()
    with store.tx():  # the RPV as `hsm ped vector init` leaves it (the orange key's)
        store.set_meta("rpv_sealed", master.seal("rpv", bytearray(rpv)).hex())
    return Host(hsm, router, store, master, drops)


@asynccontextmanager
async def site() -> AsyncIterator[Site]:
    with short_tmp() as root:
        keys = root / "keys"
        keys.mkdir()
        ring = Keyring(keys)
        rpv = secrets.token_bytes(32)
        ring.imprint(new_keyset(Color.ORANGE, "RPV", secret=rpv), create=True)
        ring.add_blanks(4)
        async with trio.open_nursery() as nursery:
            ped = EmulatedPed(keys, serial="BUSY-1")
            operator = Operator(ped, keys, nursery)
            operator.arrive()
            driver = InProcessPedDriver(ped, nursery)
            server = PedServer(
                ServerSettings(ip="127.0.0.1", port=0, device=driver.uri),
                driver, control_path=root / "server.sock",
            )
            client = PedClient(ClientSettings(), endpoint_path=root / "client.sock",
                               control_path=root / "client-control.sock", name="hsmhost")
            _, port = await nursery.start(server.serve)
            endpoint = await nursery.start(client.serve)
            a = _host(root / "a", "BUSY-A", endpoint, rpv)
            b = _host(root / "b", "BUSY-B", endpoint, rpv)
            try:
                await nursery.start(a.router.run)
                await nursery.start(b.router.run)
                yield Site(a, b, server, ped, operator, keys, {"ip": "127.0.0.1", "port": port})
            finally:
                client.request_stop("test over")
                server.request_stop("test over")
                nursery.cancel_scope.cancel()
                for host in (a, b):
                    host.store.close()
                    host.master.wipe()


def _secrets(keys: Path) -> list[str]:
    """Every key's share and secret in the keyring (all 1 of 1, no PED PIN: the secret
    is what the HSM gets), as the texts could show them (hex, either case)."""
    found = []
    for entry in Keyring(keys).entries():
        header = entry.header
        if header is None or header.blank or header.color is None:
            continue
        image = load_image(entry.path)
        share = image.share()
        collector = ShareCollector(header.color, header.keyset_id)
        try:
            collector.add(image)
            secret = collector.secret()
            found += [bytes(share.value).hex(), bytes(secret).hex()]
            wipe(secret)
        finally:
            wipe(share.value)
            image.wipe()
    return [form for value in found for form in (value, value.upper())]


async def _until(condition: Any) -> None:
    while not condition():
        await trio.sleep(0.1)


async def test_a_busy_ped_refuses_the_login_and_the_link_stays(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pedhsm.ped")
    async with site() as s:
        a, b = s.a, s.b
        assert "Remote PED connected" in (await a.cmd("hsm.ped.connect", **s.connect))["text"]
        assert "Remote PED connected" in (await b.cmd("hsm.ped.connect", **s.connect))["text"]
        await b.cmd("hsm.init", label="bee", force=False)
        await b.cmd("hsm.logout")
        left = await b.attempts_left()
        session = b.router.link.session  # the session B's link holds

        # A's operation waits at the PED: its operator stepped away.
        s.operator.leave()
        async with trio.open_nursery() as nursery:
            a_done: list[dict[str, Any]] = []

            async def a_init() -> None:
                a_done.append(await a.cmd("hsm.init", label="ay", force=False))

            nursery.start_soon(a_init)
            await _until(lambda: s.server.relay.holder is not None
                         and s.ped.panel.screen.prompt.kind is not PromptKind.IDLE)

            started = trio.current_time()
            with pytest.raises(PedBusyRefusal) as refused:
                await b.cmd("hsm.login")
            assert trio.current_time() - started >= BUSY_WAIT  # B waited for the PED
            text = str(refused.value)
            assert "busy with another HSM's operation" in text, text
            assert f"this HSM waited {BUSY_WAIT:g} s" in text, text
            assert "not counted" in text and "the link stays connected" in text, text
            assert "retry when the PED is free" in text and "mode show" in text, text
            assert "hsm ped connect" not in text and "lost" not in text, text
            assert not isinstance(refused.value, PedLinkLost)

            # B's link is as it was: connected, the same session, still usable.
            assert session is not None and b.router.link.session is session and session.usable
            shown = await b.show()
            assert "Connected:          yes" in shown and "Link lost" not in shown, shown
            status = b.router.status()
            assert status["connected"] is True and status["lost"] is None, status
            assert await b.attempts_left() == left  # not counted
            refusal = b.hsm.state.audit.records()[-1]
            assert refusal["event"] == "login refused", refusal
            assert refusal["reason"] == "ped-busy" and refusal["counted"] is False, refusal

            s.operator.arrive()  # back at the PED: A's operation ends
        assert a_done and "ped disconnected" not in a.audit()

        # B's login now succeeds on the same session: no new connect, no orange key.
        assert "HSM SO logged in" in (await b.cmd("hsm.login"))["text"]
        assert b.router.link.session is session
        assert await b.attempts_left() == left
        audit = b.audit()
        assert audit.count('"ped connected"') == 1, audit
        assert "ped disconnected" not in audit, audit
        assert not b.drops and not a.drops
        assert not [r for r in caplog.records if "link lost" in r.getMessage()]
        # no secret in anything either HSM said, nor in their audit logs
        shares = _secrets(s.keys)
        for said in [*a.said, *a.notes, *b.said, *b.notes, a.audit(), audit]:
            assert not any(share in said for share in shares), said


def test_busy_maps_to_a_busy_refusal_not_a_lost_link() -> None:
    busy = PedBusy("the PED at 10.0.0.5:1503 is busy with another HSM's operation "
                   "(held by link 3 from 10.0.0.9:40000 (pedclient on hsm1)); "
                   "try again when it is free")
    held = map_error(busy, "remote PED 10.0.0.5:1503", waited=15.0, link_stays=True)
    assert isinstance(held, PedBusyRefusal) and not isinstance(held, PedLinkLost)
    assert held.outcome == "ped-busy"
    text = str(held)
    assert text.startswith("the PED at remote PED 10.0.0.5:1503 is busy with another HSM's "
                           "operation; this HSM waited 15 s for it (not counted; the link "
                           "stays connected: retry when the PED is free;"), text
    assert "held by link 3 from 10.0.0.9:40000 (pedclient on hsm1)" in text, text
    # At connect (no link yet) or on a local PED: no link to stay, the wait if unknown
    fresh = str(map_error(busy, "local PED emulated:/k"))
    assert "link stays" not in fresh and "waited" not in fresh, fresh
    assert "not counted" in fresh and "retry when the PED is free" in fresh, fresh


async def test_a_connect_to_a_busy_ped_is_refused_busy_and_works_once_it_is_free(
    clock: trio.testing.MockClock,
) -> None:
    async with site() as s:
        a, b = s.a, s.b
        await a.cmd("hsm.ped.connect", **s.connect)
        s.operator.leave()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(a.cmd, "hsm.init", label="ay", force=False))
            await _until(lambda: s.server.relay.holder is not None
                         and s.ped.panel.screen.prompt.kind is not PromptKind.IDLE)
            with pytest.raises(PedBusyRefusal) as refused:
                await b.cmd("hsm.ped.connect", **s.connect)
            text = str(refused.value)
            assert "busy with another HSM's operation" in text, text
            assert f"waited {BUSY_WAIT:g} s" in text and "not counted" in text, text
            assert "link stays" not in text, text  # there was no link yet
            status = b.router.status()
            assert status["connected"] is False and status["lost"] is None, status
            s.operator.arrive()
        connected = (await b.cmd("hsm.ped.connect", **s.connect))["text"]
        assert connected.startswith("Remote PED connected"), connected
        assert not b.drops and not a.drops


async def test_a_busy_local_ped_says_how_long_this_hsm_waited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hsm.localped import LocalPed

    async def busy(*args: object) -> None:
        raise PedBusy("the PED is busy with another HSM's operation; try again when it is free")

    local = LocalPed("emulated:/nowhere")
    monkeypatch.setattr(local, "_handshake", busy)
    with pytest.raises(PedBusyRefusal) as refused:
        async with local.session({"busy_wait": 15.0}, touch=lambda: None,
                                 timeouts=lambda: {}, announce=lambda text, color: None):
            pass
    text = str(refused.value)
    assert "this HSM waited 15 s for it (not counted" in text, text
    assert "link stays" not in text and "pedserver" not in text, text
