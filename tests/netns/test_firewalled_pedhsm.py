"""pedhsm on a firewalled HSM host, for real: two network namespaces joined by veth.

Host A is the PED workstation: pedserver with an emulated PED (auto operator, holding a
duplicate of the HSM's orange key).  Host B is the HSM host: the pedhsm daemon (its RPV
made on its cabled, local emulated PED) and pedclient, behind an nftables firewall that
drops every new outgoing connection.  Peer-to-peer mode (A dials B over pinned mutual TLS,
``pedhsm hsm ped connect --peer``) carries ``hsm init`` and an SO ``hsm login``; standard
mode (``--ip A``: B would dial A) fails with pedclient's clear error, and nothing is
counted.  Runs as root with iproute2 and nftables; skips with the reason elsewhere, fails
instead when PED_REQUIRE_NETNS=1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hsm import cli as hsm_cli
from hsm.clock import TEST_CLOCK_ENV
from tests.hsm.test_remote_e2e import Site
from tests.netns.harness import TwoHosts
from tests.p2p.rig import APPLIANCE, P2P, PEER, cli, ok, peer_state, wait_until
from tests.p2p.test_pedhsm_peer import ORANGE_PROMPT, SO_PIN, duplicate_orange_key
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.netns


@pytest.fixture
def rig(two_hosts: TwoHosts) -> Iterator[P2P]:
    """pedserver's home on host A, pedclient's on host B; daemons stopped at the end."""
    with short_tmp() as root:
        pair = P2P(root, prefix_server=two_hosts.a.command(), prefix_client=two_hosts.b.command())
        pair.server_home.mkdir(mode=0o700)
        pair.client_home.mkdir(mode=0o700)
        try:
            yield pair
        finally:
            pair.stop_all()


@pytest.fixture
def site(
    rig: P2P, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    """pedhsm's home; its admin commands reach the daemon over its local socket."""
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(rig.root / "h", capsys)
    yield s
    s.stop_all()


def test_firewalled_pedhsm_standard_fails_peer_to_peer_logs_in(
    two_hosts: TwoHosts, rig: P2P, site: Site
) -> None:
    a, b = two_hosts.a, two_hosts.b
    # The pedhsm daemon runs on host B (so do the PED link and pedclient it asks).
    ok(cli("hsm.cli", "mode", "start", "--home", str(site.hsm_home), "--serial", "880201",
           "--local-ped", f"emulated:{site.keys}?mode=local&operator=auto",
           "--pedclient", str(rig.client_home / "pedclient.sock"), prefix=b.command()))
    site.started.append((hsm_cli.main, site.hsm_home))
    assert "Remote PED Vector set" in site.hsm_ok("hsm", "ped", "vector", "init")
    ws_keys, pins = rig.root / "ws-keys", rig.root / "pins.txt"
    duplicate_orange_key(site.keys, ws_keys)
    pins.write_text(f"{SO_PIN}\n")

    b.block_new_outgoing()
    rig.register_server_at_client()
    peer_port = rig.start_client()
    rig.register_client_at_server(b.ip, peer_port)
    rig.start_server(f"emulated:{ws_keys}?operator=auto&pin-file={pins}&pin=yes", "--ip", a.ip)
    server_port = rig.server_show()["port"]

    # Peer-to-peer: pedserver on A dials B; pedhsm takes that link for init and SO login.
    assert "is up" in ok(rig.server("mode", "connect", "--name", APPLIANCE))
    wait_until(lambda: peer_state(rig) == "connected spare", "pedserver's spare on host B")
    out = site.hsm_ok("hsm", "ped", "connect", "--peer", PEER)
    assert ORANGE_PROMPT in out and f"Remote PED connected (peer {PEER})." in out
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED mode:           remote" in shown and f"Remote PED:         peer {PEER}" in shown
    assert "Please attend to the PED." in site.hsm_ok("hsm", "init", "--label", "walled")
    assert "HSM SO logged in." in site.hsm_ok("hsm", "login")
    link = rig.server_show()["peer_links"][0]
    assert link["state"] == "connected" and link["address"] == f"{b.ip}:{peer_port}"
    site.hsm_ok("hsm", "logout")
    assert "Remote PED disconnected." in site.hsm_ok("hsm", "ped", "disconnect")

    # Standard mode: pedclient on B must dial A, and B's firewall drops that.
    drops = b.firewall_drops()
    code, out, err = site.hsm("hsm", "ped", "connect", "--ip", a.ip, "--port", str(server_port))
    assert code == 1, (out, err)
    assert f"{a.ip}:{server_port}" in err and "firewall" in err, err
    assert "not counted" in err, err
    assert b.firewall_drops() > drops
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED mode:           local" in shown and "Connected:          no" in shown
    assert "SO login attempts left: 3" in site.hsm_ok("hsm", "show")

    assert "chain intact" in site.hsm_ok("audit", "log", "verify")
    events = [json.loads(line) for line in (site.hsm_home / "audit.log").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "ped connect failed"]
    assert [e["address"] for e in failed] == [f"{a.ip}:{server_port}"]
    assert "login failed" not in [e["event"] for e in events]
