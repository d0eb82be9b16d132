"""The firewalled HSM host, for real: two network namespaces joined by veth.

Host A is the PED workstation (pedemu + pedserver); host B is the HSM host (pedclient and
the HSM side, ped.hsm_api) whose nftables firewall drops every new outgoing connection.
Standard mode (B dials A) fails with pedclient's clear error; peer-to-peer mode (A dials
B over pinned mutual TLS) works and an SO login's PED read (the blue key, PIN entered on
the PED) completes.  Runs as root with iproute2 and nftables; skips with the reason
elsewhere, fails instead when PED_REQUIRE_NETNS=1.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import pytest

from keys.colors import Color
from tests.netns.harness import TwoHosts
from tests.p2p.rig import APPLIANCE, BIN, P2P, PEER, ROOT, ok, peer_state, wait_until
from tests.pedserver.fakes import short_tmp
from tests.pedserver.test_secrets_tap import _make_keys

pytestmark = pytest.mark.netns

#: The HSM side, run on host B: connect through pedclient, read the SO's blue key.
#: The RPV comes on stdin (never on a command line); only a hash of the secret is printed.
HSM = textwrap.dedent(
    """
    import hashlib, sys, trio
    from keys.colors import Color
    from ped.hsm_api import open_ped_session
    from ped.link import ConnectFailed, connect_via_pedclient
    sock, mode, target = sys.argv[1:4]
    rpv = bytes.fromhex(sys.stdin.read().strip())
    async def main():
        try:
            if mode == "standard":
                host, port = target.rsplit(":", 1)
                link = await connect_via_pedclient(sock, host, int(port), timeout=3)
            else:
                link = await connect_via_pedclient(sock, None, peer=target, timeout=10)
        except ConnectFailed as exc:
            print("FAILED", exc.code.name, exc, flush=True)
            return
        async with open_ped_session(link, rpv=rpv, hsm_serial="150001") as ped:
            result = await ped.read_secret(Color.BLUE, label="HSM SO")
            print("SO", hashlib.sha256(bytes(result.secret)).hexdigest(), flush=True)
        await link.aclose()
    trio.run(main)
    """
)


def _hsm(two_hosts: TwoHosts, rig: P2P, mode: str, target: str, rpv: bytes) -> str:
    done = subprocess.run(
        two_hosts.b.command(sys.executable, "-c", HSM,
                            str(rig.client_home / "pedclient.sock"), mode, target),
        input=rpv.hex(), capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_firewalled_hsm_host_standard_fails_peer_to_peer_works(two_hosts: TwoHosts) -> None:
    a, b = two_hosts.a, two_hosts.b
    with short_tmp() as root:
        rig = P2P(root, prefix_server=a.command(), prefix_client=b.command())
        rig.server_home.mkdir(mode=0o700)
        rig.client_home.mkdir(mode=0o700)
        keyring, pins = root / "keys", root / "pins.txt"
        keyring.mkdir()
        rpv, expected, _ = _make_keys(keyring, pins)
        a.popen(str(BIN / "pedemu"), "--keyring", str(keyring), "--socket",
                str(root / "ped.sock"), "--operator", "auto", "--pin-file", str(pins),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until((root / "ped.sock").exists, "pedemu's socket")
        try:
            b.block_new_outgoing()
            rig.register_server_at_client()
            peer_port = rig.start_client()
            rig.register_client_at_server(b.ip, peer_port)
            rig.start_server(f"socket:{root / 'ped.sock'}", "--ip", a.ip)
            server_port = rig.server_show()["port"]

            # Standard mode: pedclient on B must dial A, and B's firewall drops that.
            said = _hsm(two_hosts, rig, "standard", f"{a.ip}:{server_port}", bytes(rpv))
            assert said.startswith("FAILED TIMEOUT"), said
            assert f"{a.ip}:{server_port}" in said and "firewall" in said
            assert b.firewall_drops() > 0
            assert not b.can_connect(a.ip, server_port, timeout=1)

            # Peer-to-peer mode: pedserver on A dials B; the SO's PED read completes.
            assert "is up" in ok(rig.server("mode", "connect", "--name", APPLIANCE))
            wait_until(lambda: peer_state(rig) == "connected spare", "the spare on host B")
            said = _hsm(two_hosts, rig, "peer", PEER, bytes(rpv))
            assert said == f"SO {hashlib.sha256(expected[Color.BLUE]).hexdigest()}", said
            shown = rig.server_show()["peer_links"][0]
            assert shown["state"] == "connected" and shown["address"] == f"{b.ip}:{peer_port}"
        finally:
            rig.stop_all()
