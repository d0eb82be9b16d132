"""pedhsm over the peer-to-peer link, with real processes on 127.0.0.1.

The HSM (pedhsm) makes its Remote PED Vector on its cabled, local emulated PED; the
orange key is duplicated for the PED workstation, whose pedserver (with an emulated PED
worked by the auto operator) dials pedclient over pinned mutual TLS (``pedserver mode
connect``).  ``pedhsm hsm ped connect --peer NAME`` then takes that link: the remote PED
asks for the orange key once, and ``hsm init`` and an SO ``hsm login`` run through it.
A wrong peer name, or a peer that has not dialled in, is refused with pedclient's clear
words and counts nothing; ``--ip`` with ``--peer`` is a usage error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import cli as hsm_cli
from hsm.clock import TEST_CLOCK_ENV
from keys import Keyring, duplicate
from keys.colors import Color
from tests.hsm.test_remote_e2e import Site
from tests.p2p.rig import APPLIANCE, P2P, PEER, ok, peer_state, wait_until

SO_PIN = "2468"
ORANGE_PROMPT = "PED operation required to connect to Remote PED - use orange PED Key(s)."


def links_in_use(rig: P2P) -> int:
    """Links pedclient carries over its peer connections (one per connected HSM)."""
    return sum(p["links"] for p in rig.client_show().get("peer_links", []))


def duplicate_orange_key(hsm_keys: Path, workstation_keys: Path) -> None:
    """The administrator copies the HSM's orange key for the PED workstation (`pedkey
    duplicate`): the remote PED must present the same RPV."""
    [orange] = Keyring(hsm_keys).keys(color=Color.ORANGE)
    workstation_keys.mkdir(mode=0o700)
    [blank] = Keyring(workstation_keys).add_blanks(1)
    duplicate(orange.path, blank)


def start_pedhsm(site: Site, rig: P2P, serial: str) -> None:
    """pedhsm with a cabled emulated PED (local mode, auto operator) and pedclient's socket."""
    site.hsm_ok(
        "mode", "start", "--serial", serial,
        "--local-ped", f"emulated:{site.keys}?mode=local&operator=auto",
        "--pedclient", str(rig.client_home / "pedclient.sock"),
    )
    site.started.append((hsm_cli.main, site.hsm_home))


@pytest.fixture
def site(
    rig: P2P, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    """pedhsm's side (test_remote_e2e's `Site`) in the rig's short directory; stopped last."""
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(rig.root / "h", capsys)
    yield s
    s.stop_all()


def test_pedhsm_init_and_so_login_over_the_peer_link(rig: P2P, site: Site) -> None:
    # The RPV on the HSM's cabled PED; its orange key duplicated for the workstation.
    start_pedhsm(site, rig, "880101")
    assert "Remote PED Vector set" in site.hsm_ok("hsm", "ped", "vector", "init")
    ws_keys, pins = rig.root / "ws-keys", rig.root / "pins.txt"
    duplicate_orange_key(site.keys, ws_keys)
    pins.write_text(f"{SO_PIN}\n")

    # Certificates both ways, pedclient listening for peers; pedserver with its PED.
    rig.register_server_at_client()
    peer_port = rig.start_client()
    rig.register_client_at_server("127.0.0.1", peer_port)
    rig.start_server(f"emulated:{ws_keys}?operator=auto&pin-file={pins}&pin=yes")

    # Registered, but pedserver has not dialled in yet: pedclient says what to run.
    code, _, err = site.hsm("hsm", "ped", "connect", "--peer", PEER)
    assert code == 1 and f"peer '{PEER}' is not connected" in err, err
    assert "pedserver mode connect" in err and "not counted" in err, err

    assert "is up" in ok(rig.server("mode", "connect", "--name", APPLIANCE))
    wait_until(lambda: peer_state(rig) == "connected spare", "pedserver's spare connection")
    out = site.hsm_ok("hsm", "ped", "connect", "--peer", PEER)
    assert ORANGE_PROMPT in out and f"Remote PED connected (peer {PEER})." in out
    assert links_in_use(rig) == 1  # over the peer connection, not a standard-mode dial
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED mode:           remote" in shown, shown
    assert f"Remote PED:         peer {PEER}" in shown and "Connected:          yes" in shown
    assert "Idle timeout in" not in shown  # the idle timeout does not apply to a peer link

    assert "Please attend to the PED." in site.hsm_ok("hsm", "init", "--label", "far")
    assert "HSM SO logged in." in site.hsm_ok("hsm", "login")
    assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show")
    site.hsm_ok("hsm", "logout")
    assert "Remote PED disconnected." in site.hsm_ok("hsm", "ped", "disconnect")
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED mode:           local" in shown and "Connected:          no" in shown
    wait_until(lambda: links_in_use(rig) == 0, "the HSM's link closed at pedclient")
    assert peer_state(rig) == "connected spare"  # the peer connection itself stays up

    # A name pedclient does not know: its words, nothing counted, still disconnected.
    code, out, err = site.hsm("hsm", "ped", "connect", "--peer", "nobody")
    assert code == 1, (out, err)
    assert "no peer named 'nobody' is registered" in err, err
    assert "pedclient peer register" in err and "not counted" in err, err
    assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show")
    assert "Connected:          no" in site.hsm_ok("hsm", "ped", "show")

    # --ip and --peer together (either spelling): argparse refuses, exit 2, nothing sent.
    for ip, peer in (("--ip", "--peer"), ("-ip", "-peer")):
        code, out, err = site.hsm("hsm", "ped", "connect", ip, "127.0.0.1", peer, PEER)
        assert code == 2 and out == "", (out, err)
        assert "argument --peer: not allowed with argument --ip" in err, err
    assert "Connected:          no" in site.hsm_ok("hsm", "ped", "show")

    assert "chain intact" in site.hsm_ok("audit", "log", "verify")
    events = [json.loads(line) for line in (site.hsm_home / "audit.log").read_text().splitlines()]
    assert {"address": f"peer {PEER}"}.items() <= next(
        e for e in events if e["event"] == "ped connected"
    ).items()
    failed = [e for e in events if e["event"] == "ped connect failed"]
    assert [e["address"] for e in failed] == [f"peer {PEER}", "peer nobody"]
    assert "login failed" not in [e["event"] for e in events]
