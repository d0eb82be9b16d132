"""The pinned peer registry: round trips, typed errors, tombstones, concurrent use."""

from __future__ import annotations

import os
import stat

import pytest

from ped.tls import PinStore, certs
from ped.tls.errors import (
    CertificateError,
    DuplicateCertificate,
    DuplicateName,
    InvalidAddress,
    InvalidPeerName,
    NotPem,
    RegistryError,
    UnknownName,
)

from .conftest import future, past


@pytest.fixture
def appliances(tmp_path) -> PinStore:
    return PinStore(tmp_path / "pedserver", program="pedserver")


@pytest.fixture
def peers(tmp_path) -> PinStore:
    return PinStore(tmp_path / "pedclient", program="pedclient")


def _cert_pem(name: str = "x") -> tuple[bytes, str]:
    _, cert = certs.generate_certificate(name)
    return certs.certificate_pem(cert), certs.fingerprint(cert)


def test_appliance_round_trip(appliances: PinStore) -> None:
    assert appliances.list() == []
    pem, fp = _cert_pem()
    peer = appliances.register("hsm-01", pem, ip=" 10.200.0.2 ")
    assert (peer.name, peer.fingerprint, peer.ip, peer.port) == ("hsm-01", fp, "10.200.0.2", 9697)
    other = appliances.register("hsm-02", _cert_pem()[0], ip="fd00::2", port=19697)
    assert other.ip == "fd00::2" and other.port == 19697
    # A new PinStore (another process: the CLI while the daemon runs) sees the same state.
    again = PinStore(appliances.path.parent, program="pedserver")
    assert [p.name for p in again.list()] == ["hsm-01", "hsm-02"]
    assert again.get("hsm-01").certificate_pem == pem
    assert again.lookup(fp.replace(":", "").lower()).name == "hsm-01"
    assert again.lookup("sha256:" + "00" * 32) is None
    deleted = again.delete("hsm-01")
    assert deleted.fingerprint == fp
    assert [p.name for p in appliances.list()] == ["hsm-02"]
    tomb = appliances.snapshot().tombstone(fp)
    assert tomb is not None and tomb.name == "hsm-01"
    # Registering it again clears the tombstone.
    appliances.register("hsm-01", pem, ip="10.200.0.2")
    assert appliances.snapshot().tombstone(fp) is None
    assert stat.S_IMODE(os.stat(appliances.path.parent).st_mode) == 0o700


def test_peer_round_trip(peers: PinStore) -> None:
    pem, fp = _cert_pem()
    peer = peers.register("ws-1", pem)
    assert (peer.ip, peer.port) == (None, None)
    assert peers.get("ws-1").fingerprint == fp
    peers.delete("ws-1")
    with pytest.raises(UnknownName, match="pedclient peer list"):
        peers.get("ws-1")


def test_duplicates_refused_and_nothing_changed(appliances: PinStore) -> None:
    pem, _ = _cert_pem()
    appliances.register("a", pem, ip="10.0.0.1")
    with pytest.raises(DuplicateCertificate, match="already registered as appliance 'a'"):
        appliances.register("b", pem, ip="10.0.0.2")
    with pytest.raises(DuplicateName, match="pedserver appliance delete --name a"):
        appliances.register("a", _cert_pem()[0], ip="10.0.0.3")
    assert [(p.name, p.ip) for p in appliances.list()] == [("a", "10.0.0.1")]


def test_unknown_names(appliances: PinStore, peers: PinStore) -> None:
    with pytest.raises(UnknownName, match="no appliance named 'nope'"):
        appliances.delete("nope")
    with pytest.raises(UnknownName, match="no peer named 'nope'"):
        peers.get("nope")


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65, "é", "a/b", "../x", "a\n"])
def test_invalid_names(peers: PinStore, name: str) -> None:
    with pytest.raises(InvalidPeerName, match="not a valid name"):
        peers.register(name, _cert_pem()[0])


def test_addresses(appliances: PinStore, peers: PinStore) -> None:
    pem, _ = _cert_pem()
    with pytest.raises(InvalidAddress, match="--ip"):
        appliances.register("a", pem)
    with pytest.raises(InvalidAddress, match="not an IPv4 or IPv6"):
        appliances.register("a", pem, ip="hsm.example")
    for port in (0, 65536, -1):
        with pytest.raises(InvalidAddress, match="between 1 and 65535"):
            appliances.register("a", pem, ip="10.0.0.1", port=port)
    with pytest.raises(InvalidAddress, match="no address"):
        peers.register("a", pem, ip="10.0.0.1")
    assert appliances.list() == [] and peers.list() == []


def test_bad_certificates_refused(peers: PinStore) -> None:
    with pytest.raises(NotPem):
        peers.register("a", b"not a certificate")
    _, old = certs.generate_certificate("old", days=10, now=past(30))
    with pytest.raises(CertificateError, match=r"expired.*pedserver certificate regen"):
        peers.register("a", old)
    _, early = certs.generate_certificate("early", now=future(2))
    with pytest.raises(CertificateError, match=r"not yet valid.*check both clocks"):
        peers.register("a", early)
    assert peers.list() == []


def test_snapshot_is_consistent_while_registry_changes(peers: PinStore) -> None:
    peers.register("a", _cert_pem()[0])
    snap = peers.snapshot()
    peers.register("b", _cert_pem()[0])
    peers.delete("a")
    assert [p.name for p in snap.peers] == ["a"]  # what an in-flight handshake checks
    assert [p.name for p in peers.snapshot().peers] == ["b"]  # what the next one checks


def test_damaged_registry_is_a_typed_error(peers: PinStore) -> None:
    peers.path.parent.mkdir(parents=True)
    peers.path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="cannot use the registry"):
        peers.list()


def test_repr_is_short(peers: PinStore) -> None:
    pem, _ = _cert_pem()
    peer = peers.register("a", pem)
    assert "BEGIN" not in repr(peer) and "BEGIN" not in repr(peers)


def test_concurrent_writers_from_threads(tmp_path) -> None:
    """The CLI and a daemon (or two CLIs) may write at once: every change lands."""
    import threading

    pems = [_cert_pem()[0] for _ in range(8)]
    errors: list[BaseException] = []

    def register(i: int) -> None:
        try:
            PinStore(tmp_path, program="pedclient").register(f"p{i}", pems[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in PinStore(tmp_path, program="pedclient").list()) == [
        f"p{i}" for i in range(8)
    ]


def test_register_checks_certificate_objects_too(peers: PinStore) -> None:
    from cryptography import x509

    from ped.tls.errors import WrongKeyForCertificate

    from .test_certs import _other_signed

    forged = x509.load_pem_x509_certificate(_other_signed(None, same_name=True))
    with pytest.raises(WrongKeyForCertificate):
        peers.register("a", forged)
