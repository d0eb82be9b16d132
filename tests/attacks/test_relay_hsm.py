"""Attacks 2-4 seen from the real pedhsm: transport failures are never counted.

The whole trusted path of ``tests/hsm/test_remote_e2e.py`` (its `Site`: pedhsm ->
pedclient -> pedserver -> emulated PED in remote mode, script operator), with the
malicious relay (`EvilRelay`, run in a thread) between pedclient and pedserver.  The
relay flips a bit of the sealed frame that carries the PED's answer to a login, and
cuts a login's request mid-frame: each login fails with a clear message (the tampered
answer "failed authentication"; the cut link "not counted; retry"), the SO attempt
count never moves, the HSM reconnects to the remote PED and the next genuine login
succeeds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

from hsm.clock import TEST_CLOCK_ENV
from keys.colors import Color
from ped.wire.types import E2EType
from tests.attacks.rig import Cut, EvilRelay
from tests.hsm.emulated import Script
from tests.hsm.test_remote_e2e import Site

SEALED = int(E2EType.SEALED)


class RelayThread:
    """An `EvilRelay` served by its own trio loop in a thread (the shell calls block)."""

    def __init__(self, target_port: int) -> None:
        self.relay = EvilRelay(target_port)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(30)

    async def _main(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            await self.relay.start(nursery)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


def _once(kind: str) -> object:
    """A mutator that spoils the next sealed frame once: flips a bit, or cuts it."""
    done = False

    def mutate(_index: int, frame: bytes) -> object:
        nonlocal done
        if done or frame[3] != SEALED:
            return frame
        done = True
        if kind == "cut":
            return Cut(frame[: len(frame) // 2])
        spoiled = bytearray(frame)
        spoiled[len(frame) // 2] ^= 0x10
        return bytes(spoiled)

    return mutate


@pytest.fixture
def site(
    tmp_path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(tmp_path, capsys)
    yield s
    s.stop_all()


def test_spoiled_logins_through_a_malicious_relay_are_not_counted(site: Site) -> None:
    orange, so, red = site.blanks[0], site.blanks[1], site.blanks[2]
    local = Script()
    local.session().imprint(orange)  # hsm ped vector init on the cabled PED
    remote = Script(orange=orange)
    remote.session().imprint(so).imprint(red)  # connect; hsm init
    remote.read(Color.BLUE, so)  # login: the answer is spoiled by the relay
    remote.session()  # reconnect; login: the request is cut, the PED never sees it
    remote.session().read(Color.BLUE, so)  # reconnect; a genuine login
    site.start_all(local, remote)
    relay = RelayThread(site.port)
    try:
        connect = ("hsm", "ped", "connect", "-ip", "127.0.0.1", "-port", str(relay.relay.port))
        site.hsm_ok("hsm", "ped", "vector", "init")
        site.hsm_ok(*connect)
        site.hsm_ok("hsm", "init", "--label", "relayed")
        assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show")

        expected = {"flip": "failed authentication (tampered, replayed, reordered or truncated)",
                    "cut": "not counted"}
        for kind in ("flip", "cut"):
            relay.relay.down_mutator = _once("flip") if kind == "flip" else relay.relay.down_mutator
            relay.relay.up_mutator = _once("cut") if kind == "cut" else relay.relay.up_mutator
            code, _, err = site.hsm("hsm", "login")
            assert code == 1 and expected[kind] in err and "login failed" not in err, (kind, err)
            assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show"), kind
            site.hsm("hsm", "ped", "disconnect")  # whatever the HSM made of the link
            site.hsm_ok(*connect)  # the orange key again: a new channel

        assert "HSM SO logged in." in site.hsm_ok("hsm", "login")
        assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show")
    finally:
        relay.close()
    assert "chain intact" in site.hsm_ok("audit", "log", "verify")
