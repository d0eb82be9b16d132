"""The peer link end to end on real processes: SO reads, several HSMs, drop and reconnect,
disconnect.  pedemu (auto operator) is the PED; the HSM side is ped.hsm_api over
``connect_via_pedclient(peer=...)``."""

from __future__ import annotations

import pytest
import trio

from keys.colors import Color
from ped.hsm_api import open_ped_session
from ped.link import (
    ConnectCode,
    ConnectFailed,
    LinkClosed,
    PedclientTransport,
    connect_via_pedclient,
)
from ped.tls import load_identity
from tests.p2p.rig import APPLIANCE, P2P, PEER, await_until, ok, peer_state
from tests.p2p.test_secrets_tap import start_pedemu
from tests.pedserver.test_secrets_tap import _make_keys, _wait_for


async def so_read(transport: PedclientTransport, rpv: bytearray) -> bytes:
    """What an SO login needs from the PED: the blue key's secret (PIN entered).

    Waits for the PED if busy: the previous HSM's session has ended on its own link, but
    its OpEnd and this link's OpBegin travel on two connections and may cross.
    """
    with trio.fail_after(120):
        async with open_ped_session(transport, rpv=bytes(rpv), hsm_serial="150001",
                                    busy_wait=30) as ped:
            result = await ped.read_secret(Color.BLUE, label="HSM SO")
            return bytes(result.secret)


def _in_use(rig: P2P) -> int:
    return sum(p["links"] for p in rig.client_show().get("peer_links", []))


async def test_so_reads_several_hsms_reconnect_and_disconnect(rig: P2P) -> None:
    root = rig.root
    keyring, pins = root / "keys", root / "pins.txt"
    keyring.mkdir()
    rpv, expected, _ = _make_keys(keyring, pins)
    pedemu = start_pedemu(root, keyring, pins)
    in_thread = trio.to_thread.run_sync
    endpoint = rig.client_home / "pedclient.sock"
    try:
        await _wait_for(root / "ped.sock")
        await in_thread(rig.register_server_at_client)
        peer_port = await in_thread(rig.start_client)
        await in_thread(lambda: rig.register_client_at_server("127.0.0.1", peer_port))
        await in_thread(lambda: rig.start_server(f"socket:{root / 'ped.sock'}"))
        assert "is up" in ok(await in_thread(
            lambda: rig.server("-mode", "connect", "-name", APPLIANCE)))

        # Several HSMs at once: each gets its own link (its own TLS connection).
        first = await connect_via_pedclient(endpoint, None, peer=PEER, hsm_name="hsm-a")
        second = await connect_via_pedclient(endpoint, None, peer=PEER, hsm_name="hsm-b")
        shown_server = await in_thread(lambda: ok(rig.server("mode", "show")))
        shown_client = await in_thread(lambda: ok(rig.client("mode", "show")))
        ws_fp = load_identity(rig.server_home).fingerprint
        hsm_fp = load_identity(rig.client_home).fingerprint
        assert f"appliance {APPLIANCE} at 127.0.0.1:{peer_port}: connected" in shown_server
        assert "2 link(s) in use" in shown_server and hsm_fp in shown_server
        assert "peer-to-peer (no idle timeout)" in shown_server
        assert f"peer {PEER}: connected" in shown_client and ws_fp in shown_client
        assert "2 link(s) in use" in shown_client
        assert await so_read(second, rpv) == expected[Color.BLUE]
        assert await so_read(first, rpv) == expected[Color.BLUE]
        await first.aclose()
        await second.aclose()
        await await_until(lambda: _in_use(rig) == 0, "links on the peer connection closed")

        # The link drops (pedclient restarts): pedserver dials again by itself.
        held = await connect_via_pedclient(endpoint, None, peer=PEER, hsm_name="hsm-c")
        await in_thread(lambda: rig.stop("pedclient"))
        with pytest.raises(LinkClosed):  # the HSM is told: retriable, nothing counted
            async with open_ped_session(held, rpv=bytes(rpv), hsm_serial="150001") as ped:
                await ped.read_secret(Color.BLUE, label="HSM SO")
        await in_thread(lambda: rig.start_client(port=peer_port))
        await await_until(lambda: peer_state(rig) == "connected spare",
                          "pedserver reconnected to the restarted pedclient")
        assert "reconnecting" in rig.server_log()
        again = await connect_via_pedclient(endpoint, None, peer=PEER, hsm_name="hsm-d")
        assert await so_read(again, rpv) == expected[Color.BLUE]
        await again.aclose()

        # mode disconnect ends it; an HSM is then told what to run on the workstation.
        ok(await in_thread(lambda: rig.server("mode", "disconnect", "--name", APPLIANCE)))
        await await_until(lambda: peer_state(rig) == "not connected", "the spare hung up")
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(endpoint, None, peer=PEER, timeout=5)
        assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
        assert "pedserver mode connect" in str(failed.value)
        assert (await in_thread(rig.server_show))["peer_links"] == []
    finally:
        await in_thread(rig.stop_all)
        pedemu.terminate()
        pedemu.wait(timeout=30)


async def test_standard_requests_still_work_beside_peer_listen(rig: P2P) -> None:
    """The two modes are per link: one pedclient serves both kinds of request."""
    in_thread = trio.to_thread.run_sync
    await in_thread(lambda: rig.start_client())
    await in_thread(lambda: rig.start_server("socket:/nonexistent"))
    port = (await in_thread(rig.server_show))["port"]
    endpoint = rig.client_home / "pedclient.sock"
    standard = await connect_via_pedclient(endpoint, "127.0.0.1", port, hsm_name="std")
    assert standard.result.ok
    await standard.aclose()
    with pytest.raises(ConnectFailed) as failed:  # registered nowhere: says how to fix
        await connect_via_pedclient(endpoint, None, peer="nobody", timeout=5)
    assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
    assert "pedclient peer register" in str(failed.value)
