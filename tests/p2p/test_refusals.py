"""Refused certificates, through the running daemons: pedserver dials, pedclient listens.

For each kind (unknown, deleted, expired, not yet valid) ``pedserver mode connect`` says
the link is not up and why; each daemon's log has one line naming the fingerprint, the
reason and the fixing command; no link is offered to an HSM.  After the fix,
``mode connect`` again brings the link up at once: a refusal costs nothing (wrong key for
the certificate is covered by tests/tls with a forged peer).
"""

from __future__ import annotations

import datetime

import pytest

from ped.link import ConnectCode, ConnectFailed, connect_via_pedclient
from ped.tls import PinStore, load_identity, regenerate_identity
from ped.tls.certs import utcnow
from tests.p2p.rig import APPLIANCE, P2P, PEER, await_until, ok, peer_state


def _lines(log: str, needle: str) -> list[str]:
    return [line for line in log.splitlines() if needle in line]


def _start(rig: P2P, *, register_at_client: bool = True) -> None:
    if register_at_client:
        rig.register_server_at_client()
    port = rig.start_client()
    rig.register_client_at_server("127.0.0.1", port)
    rig.start_server("socket:/nonexistent")


async def _no_peer_link(rig: P2P) -> None:
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(rig.client_home / "pedclient.sock", None, peer=PEER,
                                    timeout=5)
    assert failed.value.code is ConnectCode.PEER_UNAVAILABLE


def _refused(rig: P2P) -> str:
    result = rig.server("mode", "connect", "--name", APPLIANCE)
    assert result.returncode == 1, result.stdout
    assert "is not up" in result.stderr and "keeps trying" in result.stderr
    return result.stderr


async def test_unknown_certificate_then_registered(rig: P2P) -> None:
    _start(rig, register_at_client=False)
    ws = load_identity(rig.server_home).fingerprint
    said = _refused(rig)
    assert ws in said and "unknown" in said and "pedclient peer register" in said
    client_lines = _lines(rig.client_log(), f"certificate {ws} is unknown")
    assert len(client_lines) == 1, rig.client_log()
    assert "fix:" in client_lines[0] and "pedclient peer register --name NAME" in client_lines[0]
    server_lines = _lines(rig.server_log(), f"refused our certificate {ws}")
    assert len(server_lines) == 1 and "pedclient peer register" in server_lines[0]
    assert "refused" in rig.server_show()["peer_links"][0]["state"]
    await _no_peer_link(rig)
    rig.register_server_at_client()  # the fix; the running pedclient reads it next time
    assert "is up" in ok(rig.server("mode", "connect", "--name", APPLIANCE))
    assert peer_state(rig) == "connected spare"


async def test_deleted_certificate(rig: P2P) -> None:
    _start(rig)
    ok(rig.server("mode", "connect", "--name", APPLIANCE))
    ok(rig.server("mode", "disconnect", "--name", APPLIANCE))
    ok(rig.client("peer", "delete", "--name", PEER))
    ws = load_identity(rig.server_home).fingerprint
    said = _refused(rig)
    assert ws in said
    lines = _lines(rig.client_log(), f"certificate {ws} is deleted")
    assert len(lines) == 1
    assert f"registered as '{PEER}' and deleted" in lines[0]
    assert f"pedclient peer register --name {PEER}" in lines[0]
    assert len(_lines(rig.server_log(), f"refused our certificate {ws}")) == 1
    await _no_peer_link(rig)
    rig.register_server_at_client()
    assert "is up" in ok(rig.server("mode", "connect", "--name", APPLIANCE))


def _identity_at(rig: P2P, when: datetime.datetime, days: int) -> str:
    """Give pedserver an identity valid from *when* and pin it at pedclient as it is."""
    identity = regenerate_identity(rig.server_home, "ws", now=when, days=days)
    PinStore(rig.client_home, program="pedclient").register(
        PEER, identity.certificate_pem, now=when + datetime.timedelta(hours=1))
    return identity.fingerprint


async def test_expired_certificate(rig: P2P) -> None:
    ws = _identity_at(rig, utcnow() - datetime.timedelta(days=30), days=2)
    _start(rig, register_at_client=False)
    said = _refused(rig)
    assert ws in said and "expired" in said and "pedserver certificate regen" in said
    lines = _lines(rig.client_log(), f"certificate {ws} is expired")
    assert len(lines) == 1 and "valid " in lines[0] and "certificate regen" in lines[0]
    assert len(_lines(rig.server_log(), f"refused our certificate {ws}: expired")) == 1
    await _no_peer_link(rig)


async def test_not_yet_valid_certificate(rig: P2P) -> None:
    ws = _identity_at(rig, utcnow() + datetime.timedelta(days=3), days=30)
    _start(rig, register_at_client=False)
    said = _refused(rig)
    assert ws in said and "clocks" in said
    lines = _lines(rig.client_log(), f"certificate {ws} is not yet valid")
    assert len(lines) == 1 and "check both clocks" in lines[0]
    assert len(_lines(rig.server_log(), f"refused our certificate {ws}")) == 1
    await _no_peer_link(rig)


async def test_deleted_while_its_spare_is_parked(rig: P2P) -> None:
    """A registration deleted while the link is up: the parked connection (accepted
    under the old registry) is hung up instead of being handed to an HSM."""
    _start(rig)
    ok(rig.server("mode", "connect", "--name", APPLIANCE))
    assert peer_state(rig) == "connected spare"
    ok(rig.client("peer", "delete", "--name", PEER))
    await _no_peer_link(rig)
    ws = load_identity(rig.server_home).fingerprint
    assert len(_lines(rig.client_log(), f"certificate {ws} is no longer registered")) == 1
    # pedserver notices the hang-up, dials again and is refused as deleted.
    await await_until(lambda: bool(_lines(rig.client_log(), f"certificate {ws} is deleted")),
                      "pedserver's next attempt, refused")
