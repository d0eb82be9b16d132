"""The per-handshake caches (registry snapshot, identity, ssl context) never serve stale
trust: every change to the registry or the identity applies to the very next handshake."""

from __future__ import annotations

import os
import ssl

from ped.tls import PeerRejected, RejectReason, certs
from ped.tls.context import CaptureRouter, ContextCache

from .conftest import Daemon, handshake, register_each_other


def _pem(name: str) -> bytes:
    _, cert = certs.generate_certificate(name)
    return certs.certificate_pem(cert)


def test_snapshot_is_reused_only_while_the_registry_is_unchanged(client: Daemon) -> None:
    pins = client.pins
    pins.register("a", _pem("a"))
    first = pins.snapshot()
    assert pins.snapshot() is first  # unchanged: the same snapshot
    # Back-to-back changes, no sleep: each lands within one timestamp tick of the read
    # before it, so only the SQLite change counter tells them apart.
    for i in range(20):
        pins.register(f"p{i}", _pem(f"p{i}"))
        assert pins.snapshot().by_name(f"p{i}") is not None
        pins.delete(f"p{i}")
        snap = pins.snapshot()
        assert snap.by_name(f"p{i}") is None
        assert any(t.name == f"p{i}" for t in snap.tombstones)
    assert [p.name for p in pins.snapshot().peers] == ["a"]


def test_snapshot_is_not_cached_while_a_journal_exists(client: Daemon) -> None:
    client.pins.register("a", _pem("a"))
    journal = f"{client.pins.path}-journal"
    with open(journal, "wb"):
        pass  # an empty journal is not hot: SQLite ignores it, the cache must not
    try:
        assert client.pins.snapshot() is not client.pins.snapshot()
    finally:
        os.unlink(journal)


def test_context_cache_keys_on_identity_side_and_trust(server: Daemon, client: Daemon) -> None:
    cache = ContextCache(size=2)
    cert = client.identity.certificate
    trust = [(client.identity.fingerprint, cert)]
    ctx, router = cache.get(server.identity, trust, server_side=False)
    assert isinstance(router, CaptureRouter)
    assert cache.get(server.identity, list(trust), server_side=False)[0] is ctx
    assert cache.get(server.identity, trust, server_side=True)[0] is not ctx
    assert cache.get(server.identity, [], server_side=False)[0] is not ctx
    # Bounded: the first context was evicted by the two after it.
    assert cache.get(server.identity, trust, server_side=False)[0] is not ctx


async def test_repeated_handshakes_then_deletion_and_regeneration(
    server: Daemon, client: Daemon
) -> None:
    from ped.tls import regenerate_identity

    register_each_other(server, client)
    for _ in range(3):  # warm every cache
        out = await handshake(server, client, peer_name="hsm1")
        assert not isinstance(out.dialler, BaseException), out.dialler
    client.pins.delete("ws1")
    out = await handshake(server, client, peer_name="hsm1")
    assert isinstance(out.listener, PeerRejected)
    assert out.listener.reason is RejectReason.DELETED
    # The refused certificate is still named: the shared context routes the message hook
    # to this connection's capture.
    assert out.listener.fingerprint == server.identity.fingerprint

    client.pins.register("ws1", server.identity.certificate_pem)
    out = await handshake(server, client, peer_name="hsm1")
    assert not isinstance(out.dialler, BaseException), out.dialler
    new = regenerate_identity(server.home, "workstation")
    out = await handshake(server, client, peer_name="hsm1")
    assert isinstance(out.listener, PeerRejected)
    assert out.listener.fingerprint == new.fingerprint  # the new identity, at once


async def test_identity_made_readable_by_others_is_refused_at_once(
    server: Daemon, client: Daemon
) -> None:
    register_each_other(server, client)
    out = await handshake(server, client, peer_name="hsm1")
    assert not isinstance(out.dialler, BaseException), out.dialler
    os.chmod(server.identity.path, 0o644)
    out = await handshake(server, client, peer_name="hsm1")
    assert isinstance(out.dialler, Exception)
    assert "readable by others" in str(out.dialler)


def test_the_hook_is_the_raw_router_and_ignores_all_but_handshake_messages_read(
    server: Daemon, client: Daemon
) -> None:
    """The router is set on the C-level context (no enum conversion per record: it runs
    for every record of every link) and looks nothing up for application records."""
    from ped.tls.context import CertificateCapture, _get_hook

    cache = ContextCache()
    trust = [(client.identity.fingerprint, client.identity.certificate)]
    ctx, router = cache.get(server.identity, trust, server_side=False)
    assert router is not None and _get_hook(ctx) is router
    conn = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    capture = CertificateCapture()
    router.register(conn, capture)
    message = b"\x0b" + len(b"\x00\x00\x00\x00").to_bytes(3, "big") + b"\x00\x00\x00\x00"
    for content_type, direction in ((23, "read"), (256, "read"), (22, "write")):
        router(conn, direction, 0x0304, content_type, 11, message)
    assert not capture.presented_none  # none of these reached the capture
    router(conn, "read", 0x0304, 22, 11, message)
    assert capture.presented_none  # a Certificate message read: an empty list


def test_current_identity_is_cached_until_the_file_changes(tmp_path) -> None:
    import pytest

    from ped.tls import current_identity, regenerate_identity
    from ped.tls.errors import IdentityError

    home = tmp_path / "home"
    made = current_identity(home, "workstation")  # made on first use, like ensure_identity
    assert current_identity(home, "workstation") is current_identity(home, "workstation")
    new = regenerate_identity(home, "workstation")
    assert current_identity(home, "workstation").fingerprint == new.fingerprint
    assert new.fingerprint != made.fingerprint
    os.chmod(new.path, 0o644)  # every check of load_identity runs again
    with pytest.raises(IdentityError, match="readable by others"):
        current_identity(home, "workstation")
