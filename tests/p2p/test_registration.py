"""Certificates and registrations through the real command lines (both spellings)."""

from __future__ import annotations

import stat

from ped.tls import PinStore, load_certificate, load_identity
from tests.p2p.rig import APPLIANCE, P2P, PEER, ok


def test_certificate_made_on_first_use_shown_exported_and_regenerated(rig: P2P) -> None:
    shown = ok(rig.server("certificate", "show"))
    identity = load_identity(rig.server_home)
    assert identity.fingerprint in shown and "Valid until" in shown and "Subject" in shown
    assert stat.S_IMODE((rig.server_home / "identity.pem").stat().st_mode) == 0o600
    pem = rig.root / "out.pem"
    written = ok(rig.server("certificate", "export", str(pem)))
    assert identity.fingerprint in written
    assert b"PRIVATE KEY" not in pem.read_bytes()  # the key never leaves the home
    assert load_certificate(pem) == identity.certificate
    regen = ok(rig.server("certificate", "regen"))
    new = load_identity(rig.server_home)
    assert new.fingerprint != identity.fingerprint
    assert new.fingerprint in regen and identity.fingerprint in regen  # new and replaced
    assert "register" in regen  # says what the other side must do


def test_pedclient_certificate_and_peer_round_trip(rig: P2P) -> None:
    pem = rig.root / "ws.pem"
    ok(rig.server("certificate", "export", str(pem)))
    fp = load_identity(rig.server_home).fingerprint
    assert fp in ok(rig.client("peer", "register", "--name", PEER, "--certificate", str(pem)))
    listed = ok(rig.client("peer", "list"))
    assert PEER in listed and fp in listed
    assert PinStore(rig.client_home, program="pedclient").get(PEER).fingerprint == fp
    again = rig.client("peer", "register", "--name", "other", "--certificate", str(pem))
    assert again.returncode == 1 and "already registered" in again.stderr
    ok(rig.client("peer", "delete", "--name", PEER))
    assert PEER not in ok(rig.client("peer", "list"))
    gone = rig.client("peer", "delete", "--name", PEER)
    assert gone.returncode == 1 and "pedclient peer list" in gone.stderr
    shown = ok(rig.client("certificate", "show"))
    assert load_identity(rig.client_home).fingerprint in shown


def test_pedserver_appliance_round_trip_in_luna_spelling(rig: P2P) -> None:
    pem = rig.root / "hsm.pem"
    ok(rig.client("certificate", "export", str(pem)))
    fp = load_identity(rig.client_home).fingerprint
    out = ok(rig.server("-appliance", "register", "-name", APPLIANCE, "-certificate", str(pem),
                        "-ip", "192.0.2.7", "-port", "9700"))
    assert fp in out and "192.0.2.7:9700" in out and "mode connect --name hsm1" in out
    peer = PinStore(rig.server_home, program="pedserver").get(APPLIANCE)
    assert (peer.ip, peer.port, peer.fingerprint) == ("192.0.2.7", 9700, fp)
    listed = ok(rig.server("appliance", "list"))
    assert APPLIANCE in listed and "192.0.2.7:9700" in listed and fp in listed
    ok(rig.server("-appliance", "delete", "-name", APPLIANCE))
    assert "No appliances registered" in ok(rig.server("appliance", "list"))
    # The default port, and bad input refused with what to do, registry unchanged.
    ok(rig.server("appliance", "register", "--name", APPLIANCE, "--certificate", str(pem),
                  "--ip", "192.0.2.7"))
    assert PinStore(rig.server_home, program="pedserver").get(APPLIANCE).port == 9697
    bad_ip = rig.server("appliance", "register", "--name", "x", "--certificate", str(pem),
                        "--ip", "not-an-ip")
    assert bad_ip.returncode == 1 and "IPv4 or IPv6" in bad_ip.stderr
    key_file = rig.client_home / "identity.pem"
    leaked = rig.server("appliance", "register", "--name", "y", "--certificate",
                        str(key_file), "--ip", "192.0.2.8")
    assert leaked.returncode == 1 and "PRIVATE KEY" in leaked.stderr.upper()
    assert [p.name for p in PinStore(rig.server_home, program="pedserver").list()] == [
        APPLIANCE
    ]


def test_help_everywhere(rig: P2P) -> None:
    for prog, argv in (
        (rig.server, ("certificate", "--help")),
        (rig.server, ("appliance", "register", "--help")),
        (rig.server, ("mode", "connect", "--help")),
        (rig.server, ("mode", "disconnect", "--help")),
        (rig.client, ("peer", "register", "--help")),
        (rig.client, ("certificate", "export", "--help")),
        (rig.client, ("mode", "start", "--help")),
    ):
        assert "usage:" in ok(prog(*argv))
    assert "--peer-listen" in ok(rig.client("mode", "start", "--help"))


def test_mode_connect_needs_a_running_pedserver_and_a_registered_name(rig: P2P) -> None:
    down = rig.server("mode", "connect", "--name", APPLIANCE)
    assert down.returncode == 3 and "not running" in down.stderr
    rig.start_server("socket:/nonexistent")
    unknown = rig.server("-mode", "connect", "-name", "nobody")
    assert unknown.returncode == 1 and "pedserver appliance list" in unknown.stderr
    missing = rig.server("mode", "disconnect", "--name", "nobody")
    assert missing.returncode == 1 and "mode show" in missing.stderr
