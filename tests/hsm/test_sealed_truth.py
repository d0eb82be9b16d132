"""pedhsm tells the truth after a tampered SEALED frame (conformance case 3.2).

The real HSM (`hsm.engine.Hsm` and its `hsm.pedlink.PedRouter`), in-process, reaches the
HSM suite's PED double (`pedtools.conform.faulty_ped.FaultyPed`) through the suite's
pedclient-like socket.  The PED answers a login with the right READ_RESULT, one bit
flipped: the login is refused and not counted, and from that moment the HSM knows its
session is dead: ``hsm ped show`` says so (by whom, why, what to do), the next login is
refused at once with the same words (no READ_SECRET reaches the PED), and ``hsm ped
connect`` opens a new session (the orange key again) on which a login succeeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from hsm import control
from hsm.clock import ManualClock
from hsm.crypto import MasterKey
from hsm.engine import Hsm
from hsm.errors import PedUnavailable
from hsm.pedlink import PedRouter
from hsm.store import Store
from keys import wipe
from pedtools.conform.faulty_ped import Fault, FaultyPed, Wire
from pedtools.conform.hsm_link import LinkServer
from pedtools.testing import make_keyring
from tests.pedserver.fakes import short_tmp

SERIAL = "T-SEALED"
CONNECT = {"ip": "127.0.0.1", "port": 1503}


@attrs.define
class Bed:
    """The HSM, its router and the PED double, and what the shell was told."""

    hsm: Hsm
    router: PedRouter
    ped: FaultyPed
    notes: list[str] = attrs.Factory(list)
    said: list[str] = attrs.Factory(list)  # every answer and error text, for the secret scan

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


@asynccontextmanager
async def bed() -> AsyncIterator[Bed]:
    with short_tmp() as root:
        keyring, home, sock = root / "keyring", root / "home", root / "ped.sock"
        make_keyring(keyring, blanks=1)
        home.mkdir(mode=0o700)
        ped = FaultyPed(keyring, Wire())
        store = Store(home)
        master = MasterKey.load_or_create(home)
        hsm: Hsm | None = None

        def commands() -> Any:
            assert hsm is not None
            return hsm.ped

        router = PedRouter(
            local_uri=None,
            pedclient_socket=str(sock),
            serial=SERIAL,
            timeouts=lambda: commands().timeouts(),
            on_drop=lambda loss: commands().link_dropped(loss),
            hsm_rpv=lambda: commands().rpv_if_set(),
        )
        hsm = Hsm(home, store, master, ManualClock(), router, SERIAL)
        hsm.power_on()
        rpv = ped.orange_rpv()  # the RPV the orange key holds, as `hsm ped vector init` sets it
        try:
            with store.tx():
                store.set_meta("rpv_sealed", master.seal("rpv", rpv).hex())
        finally:
            wipe(rpv)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(LinkServer(ped).serve_unix, sock)
                await nursery.start(router.run)
                yield Bed(hsm, router, ped)
                nursery.cancel_scope.cancel()
        finally:
            ped.wipe()
            store.close()
            master.wipe()


def secret_forms(b: Bed) -> list[str]:
    """Every secret of the run, as the texts could show it (hex, either case)."""
    rpv = b.ped.orange_rpv()
    try:
        values = [bytes(rpv), *(bytes(k.secret) for k in b.ped.keys.values())]
    finally:
        wipe(rpv)
    return [form for v in values for form in (v.hex(), v.hex().upper())]


async def test_a_tampered_sealed_frame_is_told_at_once_and_connect_opens_a_new_session() -> None:
    async with bed() as b:
        assert "Remote PED connected" in (await b.cmd("hsm.ped.connect", **CONNECT))["text"]
        await b.cmd("hsm.init", label="sealed", force=False)
        await b.cmd("hsm.login")
        await b.cmd("hsm.logout")
        secrets = secret_forms(b)
        left = await b.attempts_left()

        # the PED's answer to a login arrives with one bit flipped
        b.ped.fault = Fault.TAMPERED
        with pytest.raises(PedUnavailable) as refused:
            await b.cmd("hsm.login")
        b.ped.fault = Fault.NONE
        first = str(refused.value)
        assert "failed authentication" in first, first
        assert "secure channel" in first and "hsm ped connect" in first, first
        assert await b.attempts_left() == left  # (c) not counted

        # (a) show: not usable, by whom, why, the fix
        shown = await b.show()
        assert "Connected:          no" in shown, shown
        assert "secure channel" in shown and "failed authentication" in shown, shown
        assert "tampered with or corrupted on the way" in shown, shown
        assert "`hsm ped connect`" in shown and "orange key" in shown, shown
        data = (await b.cmd("hsm.ped.show"))["data"]
        assert data["connected"] is False and data["lost"]["by"] == "this HSM", data

        # the next login is refused at once, with the same why and fix: no READ_SECRET
        mark = b.ped.wire.mark()
        with pytest.raises(PedUnavailable) as again:
            await b.cmd("hsm.login")
        text = str(again.value)
        assert "secure channel" in text and "failed authentication" in text, text
        assert "hsm ped connect --ip 127.0.0.1 --port 1503" in text, text
        assert not [r for r in b.ped.wire.since(mark) if r.kind in ("read", "op-begin")]
        assert await b.attempts_left() == left

        # (b) connect opens a new session (the orange key again) and a login succeeds
        handshakes = len([r for r in b.ped.wire.records if r.kind == "handshake-init"])
        connected = (await b.cmd("hsm.ped.connect", **CONNECT))["text"]
        assert "already connected" not in connected and "Remote PED connected" in connected
        assert len([r for r in b.ped.wire.records if r.kind == "handshake-init"]) == handshakes + 1
        assert "Connected:          yes" in await b.show()
        assert "HSM SO logged in" in (await b.cmd("hsm.login"))["text"]
        assert await b.attempts_left() == left

        # the session that failed got no sealed frame after its failure (PROTOCOL.md 3.6)
        assert not [r for r in b.ped.wire.records if r.kind == "after-failure"]
        # (d) no secret in anything the HSM said, nor in its audit log
        audit = b.hsm.state.audit.path.read_text()
        assert '"by":"this HSM"' in audit and "failed authentication" in audit
        for text_ in [*b.said, *b.notes, audit]:
            assert not any(s in text_ for s in secrets), text_


async def test_connect_right_after_the_break_is_a_new_session_not_already_connected() -> None:
    async with bed() as b:
        await b.cmd("hsm.ped.connect", **CONNECT)
        await b.cmd("hsm.init", label="sealed", force=False)
        await b.cmd("hsm.logout")
        b.ped.fault = Fault.GARBAGE  # 3.1: a SEALED frame of random bytes ends it as well
        with pytest.raises(PedUnavailable):
            await b.cmd("hsm.login")
        b.ped.fault = Fault.NONE
        connected = (await b.cmd("hsm.ped.connect", **CONNECT))["text"]
        assert connected.startswith("Remote PED connected"), connected
        assert "Connected:          yes" in await b.show()
        assert "HSM SO logged in" in (await b.cmd("hsm.login"))["text"]


async def test_a_session_busy_with_an_operation_is_still_connected() -> None:
    """Only a broken session is a lost link: one in the middle of a login is not."""
    async with bed() as b:
        await b.cmd("hsm.ped.connect", **CONNECT)
        await b.cmd("hsm.init", label="sealed", force=False)
        await b.cmd("hsm.logout")
        b.ped.fault, b.ped.slow_delay = Fault.SLOW, 2.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.cmd, "hsm.login")
            while not [r for r in b.ped.wire.records if r.kind == "read"]:
                await trio.sleep(0.01)  # until the READ_SECRET reached the PED
            assert "Connected:          yes" in await b.show()
            again = (await b.cmd("hsm.ped.connect", **CONNECT))["text"]
            assert "already connected" in again and "the link stays" in again, again
        assert "Connected:          yes" in await b.show()
        assert b.hsm.state.so_logged_in
