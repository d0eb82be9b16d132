"""The secrets tap of tests/pedserver/test_secrets_tap.py, in peer-to-peer mode.

Real pedclient (``--peer-listen``) and pedserver (``mode connect``) processes, the
emulated PED (pedemu, auto operator) and an HSM using ped.hsm_api over
``connect_via_pedclient(peer=...)``.  Three taps record every byte: HSM <-> pedclient,
pedserver -> pedclient (the TLS connection pedserver dials, through a TCP tap) and
pedserver <-> PED.  The HSM reads a key of every colour (short and long labels), imprints
and shows; no RPV, PSK, secret, share, PIN-derived secret, PIN or imprinted secret is in
any tapped byte or either debug log, the network hop is TLS (not even the HSM's name is
readable there), and every SEALED frame on the clear taps is one size (PROTOCOL.md 3.6).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from keys.colors import Color
from ped.channel.handshake import derive_psk
from ped.hsm_api import open_ped_session
from ped.link import connect_via_pedclient
from pedtools.testing import wait_for_log
from pedtools.testing.tap import tcp_tap, unix_tap
from tests.p2p.rig import APPLIANCE, BIN, P2P, PEER, ok
from tests.pedserver.test_secrets_tap import (
    IMPRINTS,
    KEYS,
    _forbidden_forms,
    _make_keys,
    _wait_for,
    assert_sealed_frames_are_one_size,
    run_every_operation,
)

TLS_HANDSHAKE_RECORD = 0x16


def start_pedemu(root: Path, keyring: Path, pins: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "pedemu"), "--keyring", str(keyring), "--socket", str(root / "ped.sock"),
         "--operator", "auto", "--pin-file", str(pins), "--log-level", "debug"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def test_no_secret_crosses_the_relays_in_peer_to_peer_mode(rig: P2P) -> None:
    root = rig.root
    keyring, pins = root / "keys", root / "pins.txt"
    keyring.mkdir()
    rpv, expected, other_secrets = _make_keys(keyring, pins)
    pedemu = start_pedemu(root, keyring, pins)
    got: dict[Color, bytes] = {}
    in_thread = trio.to_thread.run_sync
    try:
        async with trio.open_nursery() as nursery:
            await _wait_for(root / "ped.sock")
            device_tap = await unix_tap(nursery, root / "tap-ped.sock", root / "ped.sock")
            await in_thread(rig.register_server_at_client)
            peer_port = await in_thread(rig.start_client)
            net_tap, net_port = await tcp_tap(nursery, peer_port)
            await in_thread(lambda: rig.register_client_at_server("127.0.0.1", net_port))
            await in_thread(lambda: rig.start_server(f"socket:{root / 'tap-ped.sock'}"))
            said = ok(await in_thread(lambda: rig.server("mode", "connect", "--name",
                                                         APPLIANCE)))
            assert "is up" in said
            local_tap = await unix_tap(nursery, root / "tap-client.sock",
                                       rig.client_home / "pedclient.sock")
            transport = await connect_via_pedclient(root / "tap-client.sock", None,
                                                    peer=PEER, hsm_name="tap-test")
            assert transport.result.server_name  # pedserver's welcome came through
            with trio.fail_after(120):
                async with open_ped_session(transport, rpv=bytes(rpv),
                                            hsm_serial="150001") as ped:
                    got = await run_every_operation(ped)
                    server = await in_thread(rig.server_show)
                    client = await in_thread(rig.client_show)
            await transport.aclose()
            # Stopped, the daemons close every connection (the link's and the parked
            # spare): once each tap has seen the end of all its streams, it holds every
            # byte the relays sent.
            await in_thread(rig.stop_all)
            for tap in (local_tap, net_tap, device_tap):
                await tap.wait_ended()
            nursery.cancel_scope.cancel()
    finally:
        await in_thread(rig.stop_all)
        pedemu.terminate()
        pedemu.wait(timeout=30)
    assert got == expected  # every secret reached the HSM, sealed, over the peer link
    # `mode show` on both ends: the peer link, by registered name, with fingerprints.
    (link,) = server["links"]
    assert link["mode"] == "peer-to-peer" and link["peer"].startswith(f"appliance {APPLIANCE}")
    (appliance,) = server["peer_links"]
    assert appliance["name"] == APPLIANCE and appliance["state"] == "connected"
    assert appliance["links"] == 1
    (peer,) = client["peer_links"]
    assert peer["name"] == PEER and peer["state"] == "connected" and peer["links"] == 1
    assert len(peer["fingerprint"]) == 95 and len(appliance["fingerprint"]) == 95
    # The taps.
    psk = bytes(derive_psk(rpv))
    forbidden = [bytes(rpv), psk, *expected.values(), *other_secrets,
                 *(secret for _, _, secret in IMPRINTS)]
    pin_texts = [pin.encode() for _, _, pin, _, _ in KEYS if pin]
    taps = {
        "HSM -> pedclient": local_tap.up, "pedclient -> HSM": local_tap.down,
        "pedserver -> pedclient": net_tap.up, "pedclient -> pedserver": net_tap.down,
        "pedserver -> PED": device_tap.up, "PED -> pedserver": device_tap.down,
    }
    wait_for_log(rig.server_home / "pedserver.log", "key-read black")  # written just after
    logs = {"pedserver log": rig.server_log().encode(), "pedclient log": rig.client_log().encode()}
    assert all(len(data) > 200 for data in taps.values())
    assert b"key-read black" in logs["pedserver log"]
    assert net_tap.up[0] == TLS_HANDSHAKE_RECORD  # pedserver dialled and spoke TLS first
    # Sizes: on the clear hops (the network hop is TLS, whose records carry the same frames).
    assert_sealed_frames_are_one_size({
        "HSM -> pedclient": (local_tap.up, False), "pedclient -> HSM": (local_tap.down, False),
        "pedserver -> PED": (device_tap.up, True), "PED -> pedserver": (device_tap.down, True),
    })
    assert b"tap-test" in bytes(local_tap.up) and b"tap-test" not in bytes(net_tap.down)
    for where, data in {**taps, **logs}.items():
        for value in forbidden:
            for form in _forbidden_forms(value):
                assert bytes(form) not in bytes(data), f"a secret appeared in {where}"
        for pin in pin_texts:
            assert pin not in bytes(data), f"a PIN appeared in {where}"
