"""Pinned mutual TLS 1.3 over real sockets: the good case and every refusal, seen from
both ends."""

from __future__ import annotations

import pytest
import trio

from ped.tls import (
    CertificateSide,
    PeerRejected,
    RejectReason,
    TlsHandshakeFailed,
    peer_fingerprint,
)

from .conftest import Daemon, future, handshake, make_daemon, past, register_each_other


def assert_refused_theirs(exc: object, reason: RejectReason, fp: str | None, fix_part: str):
    assert isinstance(exc, PeerRejected), exc
    assert exc.side is CertificateSide.THEIRS
    assert exc.reason is reason
    assert exc.fingerprint == fp
    msg = str(exc)
    if fp:
        assert fp in msg
    assert reason.value in msg
    assert fix_part in msg and fix_part in exc.fix


def assert_refused_ours(exc: object, reason: RejectReason, our_fp: str, fix_part: str):
    assert isinstance(exc, PeerRejected), exc
    assert exc.side is CertificateSide.OURS
    assert exc.reason is reason
    assert exc.fingerprint == our_fp
    assert our_fp in str(exc) and reason.value in str(exc)
    assert fix_part in str(exc)


async def test_good_handshake_and_byte_round_trip(server: Daemon, client: Daemon) -> None:
    register_each_other(server, client)
    out = await handshake(server, client, peer_name="hsm1")
    stream, name, fp = out.listener
    assert name == "ws1"
    assert fp == server.identity.fingerprint
    assert out.listener_got == b"relay frames here"
    assert out.dialler_got == b"RELAY FRAMES HERE"
    assert isinstance(stream, trio.SSLStream)


async def test_negotiates_tls13_and_pins_the_listener(server: Daemon, client: Daemon) -> None:
    import trio

    from ped.tls import accept_pinned_tls, open_pinned_tls_client

    register_each_other(server, client)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen = {}

    async def listen() -> None:
        tcp = await listeners[0].accept()
        stream, _, _ = await accept_pinned_tls(tcp, client.identity, client.pins, timeout=5)
        seen["listener_version"] = stream.version()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        stream = await open_pinned_tls_client(
            "127.0.0.1", port, server.identity, server.pins, timeout=5, peer_name="hsm1"
        )
        assert stream.version() == "TLSv1.3"
        assert peer_fingerprint(stream) == client.identity.fingerprint
        await stream.aclose()
    await listeners[0].aclose()
    assert seen["listener_version"] == "TLSv1.3"


async def test_listener_refuses_unknown_dialler(server: Daemon, client: Daemon) -> None:
    server.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    out = await handshake(server, client, peer_name="hsm1")
    assert_refused_theirs(
        out.listener,
        RejectReason.UNKNOWN,
        server.identity.fingerprint,
        "pedclient peer register --name NAME --certificate FILE",
    )
    assert_refused_ours(
        out.dialler,
        RejectReason.UNKNOWN,
        server.identity.fingerprint,
        "on that host run: pedclient peer register --name NAME --certificate FILE",
    )


async def test_dialler_refuses_unknown_listener(server: Daemon, client: Daemon, tmp_path) -> None:
    impostor = make_daemon(tmp_path, "pedclient", "impostor")
    impostor.pins.register("ws1", server.identity.certificate_pem)
    out = await handshake(server, impostor)
    assert_refused_theirs(
        out.dialler,
        RejectReason.UNKNOWN,
        impostor.identity.fingerprint,
        "pedserver appliance register --name NAME --certificate FILE --ip ADDRESS",
    )
    assert_refused_ours(
        out.listener,
        RejectReason.UNKNOWN,
        impostor.identity.fingerprint,
        "pedserver appliance register",
    )


async def test_dialler_refuses_other_registered_appliance(
    server: Daemon, client: Daemon, tmp_path
) -> None:
    other = make_daemon(tmp_path, "pedclient", "other")
    other.pins.register("ws1", server.identity.certificate_pem)
    register_each_other(server, client)
    server.pins.register("hsm2", other.identity.certificate_pem, ip="127.0.0.2")
    out = await handshake(server, other, peer_name="hsm1")  # hsm1's address answers as hsm2
    assert_refused_theirs(
        out.dialler, RejectReason.NOT_EXPECTED, other.identity.fingerprint, "'hsm2'"
    )


async def test_listener_refuses_deleted_dialler(server: Daemon, client: Daemon) -> None:
    register_each_other(server, client)
    client.pins.delete("ws1")
    out = await handshake(server, client, peer_name="hsm1")
    assert_refused_theirs(
        out.listener,
        RejectReason.DELETED,
        server.identity.fingerprint,
        "it was registered as 'ws1' and deleted",
    )
    assert_refused_ours(
        out.dialler, RejectReason.UNKNOWN, server.identity.fingerprint, "pedclient peer register"
    )


async def test_dialler_refuses_deleted_listener(server: Daemon, client: Daemon) -> None:
    register_each_other(server, client)
    server.pins.delete("hsm1")
    out = await handshake(server, client)
    assert_refused_theirs(
        out.dialler,
        RejectReason.DELETED,
        client.identity.fingerprint,
        "pedserver appliance register --name hsm1",
    )
    assert isinstance(out.listener, PeerRejected)
    assert out.listener.side is CertificateSide.OURS


async def test_listener_refuses_expired_dialler(tmp_path, client: Daemon) -> None:
    old = make_daemon(tmp_path, "pedserver", "oldws", days=30, now=past(100))
    old.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    client.pins.register("ws1", old.identity.certificate_pem, now=past(90))
    out = await handshake(old, client, peer_name="hsm1")
    assert_refused_theirs(
        out.listener, RejectReason.EXPIRED, old.identity.fingerprint, "pedserver certificate regen"
    )
    assert "valid " in str(out.listener)
    assert_refused_ours(
        out.dialler, RejectReason.EXPIRED, old.identity.fingerprint, "pedserver certificate regen"
    )


async def test_dialler_refuses_expired_listener(tmp_path, server: Daemon) -> None:
    old = make_daemon(tmp_path, "pedclient", "oldhsm", days=30, now=past(100))
    old.pins.register("ws1", server.identity.certificate_pem)
    server.pins.register("hsm1", old.identity.certificate_pem, ip="127.0.0.1", now=past(90))
    out = await handshake(server, old, peer_name="hsm1")
    assert_refused_theirs(
        out.dialler,
        RejectReason.EXPIRED,
        old.identity.fingerprint,
        "pedserver appliance delete --name hsm1",
    )
    assert_refused_ours(
        out.listener, RejectReason.EXPIRED, old.identity.fingerprint, "pedclient certificate regen"
    )


async def test_listener_refuses_not_yet_valid_dialler(tmp_path, client: Daemon) -> None:
    early = make_daemon(tmp_path, "pedserver", "earlyws", now=future(2))
    early.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    client.pins.register("ws1", early.identity.certificate_pem, now=future(3))
    out = await handshake(early, client, peer_name="hsm1")
    assert_refused_theirs(
        out.listener, RejectReason.NOT_YET_VALID, early.identity.fingerprint, "check both clocks"
    )
    assert_refused_ours(
        out.dialler, RejectReason.BAD_CERTIFICATE, early.identity.fingerprint, "check both clocks"
    )


async def test_dialler_refuses_not_yet_valid_listener(tmp_path, server: Daemon) -> None:
    early = make_daemon(tmp_path, "pedclient", "earlyhsm", now=future(2))
    early.pins.register("ws1", server.identity.certificate_pem)
    server.pins.register("hsm1", early.identity.certificate_pem, ip="127.0.0.1", now=future(3))
    out = await handshake(server, early, peer_name="hsm1")
    assert_refused_theirs(
        out.dialler, RejectReason.NOT_YET_VALID, early.identity.fingerprint, "check both clocks"
    )
    assert_refused_ours(
        out.listener, RejectReason.BAD_CERTIFICATE, early.identity.fingerprint, "check both clocks"
    )


async def test_registration_applies_to_the_next_connection(server: Daemon, client: Daemon):
    server.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    first = await handshake(server, client, peer_name="hsm1")
    assert isinstance(first.listener, PeerRejected)
    # The daemon keeps running; the CLI registers the peer; the next dial works.
    client.pins.register("ws1", server.identity.certificate_pem)
    second = await handshake(server, client, peer_name="hsm1")
    assert second.listener[1] == "ws1"
    assert second.dialler_got == b"RELAY FRAMES HERE"


async def test_dialler_with_unregistered_name_is_refused_before_dialling(server: Daemon):
    from ped.tls import open_pinned_tls_client
    from ped.tls.errors import UnknownName

    with pytest.raises(UnknownName, match="pedserver appliance list"):
        await open_pinned_tls_client(
            "127.0.0.1", 9, server.identity, server.pins, timeout=5, peer_name="nosuch"
        )


async def test_error_messages_hold_no_key_material(server: Daemon, client: Daemon) -> None:
    server.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    out = await handshake(server, client, peer_name="hsm1")
    key_pem = server.identity.path.read_text()
    body = "".join(key_pem.split("-----")[2].split())  # the base64 of the private key
    for exc in (out.listener, out.dialler):
        text = str(exc) + repr(exc) + exc.fix
        assert "PRIVATE" not in text
        assert body[:24] not in text.replace("\n", "")


async def test_dialler_that_is_not_tls(client: Daemon) -> None:
    import trio

    from ped.tls import accept_pinned_tls

    server_end, client_end = trio.testing.memory_stream_pair()
    await client_end.send_all(b"GET / HTTP/1.0\r\n\r\n")
    with pytest.raises(TlsHandshakeFailed, match="TLS"):
        await accept_pinned_tls(
            server_end, client.identity, client.pins, timeout=5, peer_address="10.0.0.9:5555"
        )


def _raw_client_context(*, tls12: bool = False, cert_from: Daemon | None = None):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert_from is not None:
        ctx.load_cert_chain(cert_from.identity.path)
    return ctx


async def _raw_dial(client: Daemon, ctx) -> tuple[object, object]:
    """A stdlib client (not ours) against our listener: (listener outcome, raw outcome)."""
    import ssl

    import trio

    from ped.tls import accept_pinned_tls

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    result: dict[str, object] = {}

    async def listen() -> None:
        tcp = await listeners[0].accept()
        try:
            result["listener"] = await accept_pinned_tls(
                tcp, client.identity, client.pins, timeout=5
            )
        except Exception as exc:
            result["listener"] = exc

    async def dial() -> None:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, ctx)
        try:
            await stream.do_handshake()
            result["raw"] = await stream.receive_some(100)
        except trio.BrokenResourceError as exc:
            result["raw"] = exc.__cause__
        finally:
            await trio.aclose_forcefully(stream)
        assert isinstance(result["raw"], ssl.SSLError | bytes)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        nursery.start_soon(dial)
    await listeners[0].aclose()
    return result["listener"], result["raw"]


async def test_listener_refuses_dialler_presenting_no_certificate(client: Daemon) -> None:
    import ssl

    listener, raw = await _raw_dial(client, _raw_client_context())
    assert isinstance(listener, PeerRejected)
    assert listener.reason is RejectReason.NONE_PRESENTED and listener.fingerprint is None
    assert "none presented" in str(listener) and "presenting its certificate" in str(listener)
    # The other end is told why: TLS 1.3's certificate_required alert.
    assert isinstance(raw, ssl.SSLError) and raw.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


async def test_listener_accepts_only_tls13(server: Daemon, client: Daemon) -> None:
    import ssl

    client.pins.register("ws1", server.identity.certificate_pem)
    listener, raw = await _raw_dial(client, _raw_client_context(tls12=True, cert_from=server))
    assert isinstance(listener, TlsHandshakeFailed) and "TLS 1.3" in str(listener)
    assert isinstance(raw, ssl.SSLError)


async def test_registered_raw_client_gets_accept_marker(server: Daemon, client: Daemon):
    from ped.tls import ACCEPTED

    client.pins.register("ws1", server.identity.certificate_pem)
    listener, raw = await _raw_dial(client, _raw_client_context(cert_from=server))
    assert listener[1] == "ws1"
    assert raw == ACCEPTED


async def test_handshake_timeout_is_bounded(client: Daemon, autojump_clock) -> None:
    import trio

    from ped.tls import HandshakeTimeout, accept_pinned_tls

    server_end, silent_peer = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeTimeout, match="within 7 s"):
        await accept_pinned_tls(server_end, client.identity, client.pins, timeout=7)
    assert trio.current_time() - start == pytest.approx(7)
    # the transport was closed: the silent peer sees EOF after the ClientHello wait
    data = b""
    while chunk := await silent_peer.receive_some():
        data += chunk
    assert data == b""  # a TLS server sends nothing before the ClientHello


async def test_dialling_a_closed_port_is_unreachable(server: Daemon, client: Daemon) -> None:
    import trio

    from ped.tls import PeerUnreachable, open_pinned_tls_client

    register_each_other(server, client)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(PeerUnreachable, match="pedclient mode start --peer-listen") as info:
        await open_pinned_tls_client("127.0.0.1", port, server.identity, server.pins, timeout=5)
    assert info.value.retriable


async def test_listener_refuses_dialler_with_wrong_key_for_certificate(
    server: Daemon, client: Daemon
) -> None:
    """An impostor shows the registered pedserver's certificate (public) but signs with
    another key: refused, naming the certificate, and the impostor gets decrypt_error."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ped.tls import accept_pinned_tls

    from .forge import ForgingPeer

    register_each_other(server, client)
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen: dict[str, object] = {}

    async def listen() -> None:
        tcp = await listeners[0].accept()
        try:
            seen["listener"] = await accept_pinned_tls(tcp, client.identity, client.pins, timeout=5)
        except Exception as exc:
            seen["listener"] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        forger = ForgingPeer(
            await trio.open_tcp_stream("127.0.0.1", port), server.identity.certificate, wrong_key
        )
        await forger.run_client()
        seen["alert"] = await forger.read_alert()
        await forger.stream.aclose()
    await listeners[0].aclose()
    assert_refused_theirs(
        seen["listener"],
        RejectReason.WRONG_KEY,
        server.identity.fingerprint,
        "without holding its private key",
    )
    assert seen["alert"] == 51  # decrypt_error: the impostor is told its signature failed


async def test_dialler_refuses_listener_with_wrong_key_for_certificate(
    server: Daemon, client: Daemon
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ped.tls import open_pinned_tls_client

    from .forge import ForgingPeer

    register_each_other(server, client)
    wrong_key = ec.generate_private_key(ec.SECP256R1())
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen: dict[str, object] = {}

    async def forge() -> None:
        tcp = await listeners[0].accept()
        forger = ForgingPeer(tcp, client.identity.certificate, wrong_key)
        await forger.run_server()
        seen["alert"] = await forger.read_alert()
        await tcp.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(forge)
        with pytest.raises(PeerRejected) as info:
            await open_pinned_tls_client(
                "127.0.0.1", port, server.identity, server.pins, timeout=5, peer_name="hsm1"
            )
    await listeners[0].aclose()
    assert_refused_theirs(
        info.value,
        RejectReason.WRONG_KEY,
        client.identity.fingerprint,
        "without holding its private key",
    )
    assert seen["alert"] == 51


async def test_forger_with_the_right_key_is_accepted(server: Daemon, client: Daemon) -> None:
    """Control for the two tests above: the forger is a working TLS 1.3 client, so the
    refusals come from the key and nothing else."""
    from cryptography.hazmat.primitives import serialization

    from ped.tls import ACCEPTED, accept_pinned_tls

    from .forge import ForgingPeer

    register_each_other(server, client)
    right_key = serialization.load_pem_private_key(server.identity.path.read_bytes(), None)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    seen: dict[str, object] = {}

    async def listen() -> None:
        tcp = await listeners[0].accept()
        stream, name, fp = await accept_pinned_tls(tcp, client.identity, client.pins, timeout=5)
        seen["peer"] = (name, fp)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        forger = ForgingPeer(
            await trio.open_tcp_stream("127.0.0.1", port), server.identity.certificate, right_key
        )
        await forger.run_client()
        kind, data = await forger._read_record()
        seen["first"] = (kind, data)
        await forger.stream.aclose()
    await listeners[0].aclose()
    assert seen["peer"] == ("ws1", server.identity.fingerprint)
    assert seen["first"] == (23, ACCEPTED)  # decrypted with the forger's own key schedule


async def test_dialler_handshake_timeout_is_bounded(
    server: Daemon, client: Daemon, autojump_clock
) -> None:
    from ped.tls import HandshakeTimeout, start_pinned_tls_client

    register_each_other(server, client)
    ours, silent_listener = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeTimeout, match=r"10\.200\.0\.2:9697 did not finish within 4 s"):
        await start_pinned_tls_client(
            ours,
            server.identity,
            server.pins,
            timeout=4,
            peer_name="hsm1",
            peer_address="10.200.0.2:9697",
        )
    assert trio.current_time() - start == pytest.approx(4)
    hello = await silent_listener.receive_some()
    assert hello[:1] == b"\x16"  # it did send its ClientHello, then gave up and closed


async def test_without_the_message_hook_reasons_still_come_from_openssl(
    tmp_path, server: Daemon, client: Daemon, monkeypatch
) -> None:
    """If a Python lacks SSLContext._msg_callback, refusals keep their reason (from the
    verify code) and simply name no fingerprint for the refused certificate."""
    from ped.tls.context import CertificateCapture

    monkeypatch.setattr(CertificateCapture, "install", lambda self, ctx: False)
    server.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    out = await handshake(server, client, peer_name="hsm1")
    assert isinstance(out.listener, PeerRejected)
    assert out.listener.reason is RejectReason.UNKNOWN and out.listener.fingerprint is None
    assert "pedclient peer register" in str(out.listener)

    old = make_daemon(tmp_path, "pedserver", "old2", days=30, now=past(100))
    old.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    client.pins.register("ws-old", old.identity.certificate_pem, now=past(90))
    out = await handshake(old, client, peer_name="hsm1")
    assert out.listener.reason is RejectReason.EXPIRED and out.listener.fingerprint is None


async def test_regenerated_identity_applies_to_the_next_connection(
    server: Daemon, client: Daemon
) -> None:
    from ped.tls import regenerate_identity

    register_each_other(server, client)
    old_fp = server.identity.fingerprint
    new = regenerate_identity(server.home, "workstation")  # while the daemon runs
    out = await handshake(server, client, peer_name="hsm1")  # still holding the old object
    assert_refused_theirs(out.listener, RejectReason.UNKNOWN, new.fingerprint, "register")
    assert out.dialler.fingerprint == new.fingerprint != old_fp
    client.pins.delete("ws1")
    client.pins.register("ws1", new.certificate_pem)
    out = await handshake(server, client, peer_name="hsm1")
    assert out.listener[2] == new.fingerprint


async def test_serve_pinned_tls_logs_one_line_per_refusal_and_serves_the_rest(
    server: Daemon, client: Daemon, tmp_path, caplog
) -> None:
    import logging

    from ped.tls import open_pinned_tls_client, serve_pinned_tls

    caplog.set_level(logging.INFO, logger="ped.tls")
    register_each_other(server, client)
    stranger = make_daemon(tmp_path, "pedserver", "stranger")
    stranger.pins.register("hsm1", client.identity.certificate_pem, ip="127.0.0.1")
    served: list[tuple[str, str, bytes]] = []

    async def handler(stream, name, fp) -> None:
        data = await stream.receive_some(100)
        served.append((name, fp, data))
        await stream.send_all(b"ok")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_pinned_tls, handler, 0, client.identity, client.pins)
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(PeerRejected):
            await open_pinned_tls_client(
                "127.0.0.1", port, stranger.identity, stranger.pins, timeout=5, peer_name="hsm1"
            )
        stream = await open_pinned_tls_client(
            "127.0.0.1", port, server.identity, server.pins, timeout=5, peer_name="hsm1"
        )
        await stream.send_all(b"hello")
        assert await stream.receive_some(10) == b"ok"
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert served == [("ws1", server.identity.fingerprint, b"hello")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "\n" not in line and stranger.identity.fingerprint in line and "unknown" in line
    assert "pedclient peer register --name NAME --certificate FILE" in line
