"""trio shells for the pinned, mutual TLS 1.3 peer link.

Theory of operation
-------------------
In peer-to-peer mode pedserver *dials* (TLS client, `open_pinned_tls_client`) and
pedclient *listens* (TLS server, `accept_pinned_tls`).  Each call takes a fresh snapshot
of the pin registry and re-reads our identity (both cached while their files are
unchanged), gets the `ssl` context built from exactly those (`ped.tls.context.ContextCache`:
a new one whenever either changed), runs the handshake under a deadline, then checks that
the peer's leaf certificate is exactly a pinned one (SHA-256 fingerprint,
``hmac.compare_digest``) and is valid now.

In TLS 1.3 the client finishes its handshake *before* the server has looked at the
client's certificate, so a client cannot tell from the handshake alone that it was
accepted.  The listener therefore writes `ACCEPTED` (12 bytes, inside TLS) once it has
accepted the dialler, and the dialler waits for exactly those bytes before returning.
The link protocol starts after them.

Every refusal raises `PeerRejected` on the end that notices it, naming the fingerprint
seen (the peer's, or our own when the peer refused ours), the reason and the command
that fixes it; the other end gets a TLS alert (flushed even though trio drops it on a
failed handshake) and raises its own `PeerRejected` with its side of the story.  No
secret is in any message: certificates and fingerprints are public.
"""

from __future__ import annotations

import datetime
import hmac
import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio
from cryptography import x509

from ped.tls.certs import (
    IDENTITY_FILE,
    Identity,
    ensure_identity,
    fingerprint,
    load_identity,
    validity_problem,
)
from ped.tls.context import CertificateCapture, ContextCache
from ped.tls.errors import (
    HandshakeFailed,
    HandshakeTimeout,
    PeerRejected,
    PeerUnreachable,
    RejectReason,
    Side,
    TlsError,
    UnknownName,
)
from ped.tls.pins import Peer, PinSnapshot, PinStore, Program

log = logging.getLogger("ped.tls")

#: What the listener sends, inside TLS, once it has accepted the dialler's certificate.
ACCEPTED = b"RPED-TLS-OK\n"
DEFAULT_HANDSHAKE_TIMEOUT = 15.0
#: Contexts shared by handshakes that would build identical ones (see ped.tls.context).
_CONTEXTS = ContextCache()
#: identity file -> (its stat key, the Identity read from it).
_IDENTITIES: dict[str, tuple[tuple[int, ...], Identity]] = {}
_ALERT_FLUSH_TIMEOUT = 1.0

# Alerts the peer sends when it refuses *our* certificate (OpenSSL's reason names).
_ALERT_REASONS = {
    "TLSV1_ALERT_UNKNOWN_CA": RejectReason.UNKNOWN,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": RejectReason.UNKNOWN,
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": RejectReason.EXPIRED,
    "SSLV3_ALERT_BAD_CERTIFICATE": RejectReason.BAD_CERTIFICATE,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": RejectReason.BAD_CERTIFICATE,
    "TLSV1_ALERT_DECRYPT_ERROR": RejectReason.WRONG_KEY,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": RejectReason.NONE_PRESENTED,
}
_PROTOCOL_REASONS = {
    "TLSV1_ALERT_PROTOCOL_VERSION",
    "UNSUPPORTED_PROTOCOL",
    "WRONG_VERSION_NUMBER",
    "NO_PROTOCOLS_AVAILABLE",
    "PACKET_LENGTH_TOO_LONG",
    "HTTP_REQUEST",
}


async def open_pinned_tls_client(
    host: str,
    port: int,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_name: str | None = None,
) -> trio.SSLStream[trio.abc.Stream]:
    """Dial *host*:*port* and run the pinned TLS 1.3 handshake as the client.

    With *peer_name* (pedserver dialling a registered appliance) only that peer's
    certificate is accepted; without it, any pinned one.  *timeout* bounds the TCP
    connection and the handshake together.  Raises `PeerUnreachable`,
    `HandshakeTimeout`, `HandshakeFailed`, `PeerRejected` or `UnknownName`.
    """
    address = _format_address(host, port)
    if peer_name is not None:
        pins.get(peer_name)  # UnknownName before we dial anyone
    deadline = trio.current_time() + timeout
    with trio.move_on_at(deadline) as scope:
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise PeerUnreachable(
                f"cannot connect to {address}: {exc.strerror or exc}; check that the other "
                f"side listens (pedclient mode start --peer-listen) and that no firewall "
                f"drops the connection"
            ) from None
    if scope.cancelled_caught:
        raise HandshakeTimeout(f"no TCP connection to {address} within {timeout:g} s")
    # One budget for both: what the TCP connection used is gone for the handshake.
    link = await _start_client(tcp, identity, pins, peer_name=peer_name, address=address)
    await link.run(
        max(deadline - trio.current_time(), 0.0), expected_name=peer_name, budget=timeout
    )
    return link.ssl_stream


async def start_pinned_tls_client(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_name: str | None = None,
    peer_address: str | None = None,
) -> trio.SSLStream:  # type: ignore[type-arg]
    """`open_pinned_tls_client` over a stream you already have (closed on failure)."""
    address = peer_address or _peer_address(transport)
    link = await _start_client(transport, identity, pins, peer_name=peer_name, address=address)
    await link.run(timeout, expected_name=peer_name)
    return link.ssl_stream


async def _start_client(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    peer_name: str | None,
    address: str,
) -> _Handshake:
    try:
        snap = pins.snapshot()
        if peer_name is not None:
            expected = snap.by_name(peer_name)
            if expected is None:
                raise UnknownName(
                    f"no {pins.noun} named {peer_name!r}; see: {pins.program} {pins.noun} list"
                )
            trusted: Sequence[Peer] = (expected,)
        else:
            trusted = snap.peers
        return _Handshake(transport, identity, snap, trusted, server_side=False, address=address)
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise


async def accept_pinned_tls(
    transport: trio.abc.Stream,
    identity: Identity,
    pins: PinStore,
    *,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    peer_address: str | None = None,
) -> tuple[trio.SSLStream, str, str]:  # type: ignore[type-arg]
    """Run the pinned TLS 1.3 handshake as the server on an accepted connection.

    Returns ``(ssl_stream, peer_name, peer_fingerprint)``.  *transport* is closed on
    any failure.  Raises `HandshakeTimeout`, `HandshakeFailed` or `PeerRejected`.
    """
    address = peer_address or _peer_address(transport)
    try:
        snap = pins.snapshot()
        link = _Handshake(transport, identity, snap, snap.peers, server_side=True, address=address)
    except BaseException:
        await trio.aclose_forcefully(transport)
        raise
    peer = await link.run(timeout, expected_name=None)
    return link.ssl_stream, peer.name, peer.fingerprint


PeerHandler = Callable[[trio.SSLStream, str, str], Awaitable[None]]  # type: ignore[type-arg]


async def serve_pinned_tls(
    handler: PeerHandler,
    port: int,
    identity: Identity,
    pins: PinStore,
    *,
    host: str | None = None,
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on *port* and run ``handler(stream, peer_name, fingerprint)`` per accepted
    peer, each in its own task, until cancelled (pedclient ``--peer-listen``).

    Every refused or failed handshake is logged as one line on the ``ped.tls`` logger
    (WARNING for `PeerRejected`, INFO for the rest) and costs nothing else.  *handler*
    owns the stream and handles its own errors.  ``nursery.start`` returns the
    listeners (their ``socket.getsockname()`` gives the port when *port* is 0).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def one(tcp: trio.SocketStream) -> None:
        address = _peer_address(tcp)
        try:
            stream, name, fp = await accept_pinned_tls(
                tcp, identity, pins, timeout=timeout, peer_address=address
            )
        except PeerRejected as exc:
            log.warning("%s", exc)
            return
        except TlsError as exc:
            log.info("%s", exc)
            return
        log.info("peer link from %s %r (%s) is up", address, name, fp)
        await handler(stream, name, fp)

    task_status.started(listeners)
    await trio.serve_listeners(one, listeners)


def current_identity(home_dir: os.PathLike[str] | str, common_name: str) -> Identity:
    """`ensure_identity`, but read again only when the file changed (`_current_identity`).

    For a daemon that needs its identity per connection (pedserver dials a new spare
    for every peer link): parsing the key and checking it against the certificate each
    time costs more CPU than the rest of the dial around the TLS handshake.
    """
    path = os.path.join(os.fspath(home_dir), IDENTITY_FILE)
    if not os.path.exists(path):
        return ensure_identity(home_dir, common_name)
    return _current_identity(path)


def _current_identity(path: os.PathLike[str] | str) -> Identity:
    """`load_identity` of *path*'s folder, re-read only when the file changed.

    The key is the file's inode, size, times, mode and owner: an atomic replace
    (`certificate regen`), an edit or a chmod re-reads it, and with it re-runs every check
    `load_identity` makes (key matches certificate, not readable by others).
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        _IDENTITIES.pop(path, None)
        return load_identity(os.path.dirname(path))  # raises the clear error
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
    hit = _IDENTITIES.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    identity = load_identity(os.path.dirname(path))
    _IDENTITIES[path] = (key, identity)
    return identity


def peer_fingerprint(stream: trio.SSLStream) -> str:  # type: ignore[type-arg]
    """SHA-256 fingerprint of the certificate the peer presented on *stream*."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        raise HandshakeFailed("no peer certificate on this stream")
    return fingerprint(der)


class _Handshake:
    """One handshake attempt: its context, capture and the mapping of failures."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        identity: Identity,
        snap: PinSnapshot,
        trusted: Sequence[Peer],
        *,
        server_side: bool,
        address: str,
    ) -> None:
        self.transport = transport
        # Re-read per connection, like the pins: `certificate regen` applies to the next
        # handshake of a running daemon, and messages name the certificate really shown.
        self.identity = _current_identity(identity.path)
        self.snap = snap
        self.trusted = tuple(trusted)
        self.server_side = server_side
        self.address = address
        self.capture = CertificateCapture()
        self.expected_name: str | None = None
        ctx, router = _CONTEXTS.get(
            self.identity,
            [(p.fingerprint, p.certificate) for p in self.trusted],
            server_side=server_side,
        )
        self.ssl_stream = trio.SSLStream(transport, ctx, server_side=server_side)
        if self.capture.install(ctx) and router is not None:
            # trio keeps its SSLObject private; without it we only lose the diagnostic.
            conn = getattr(self.ssl_stream, "_ssl_object", None)
            if conn is not None:
                router.register(conn, self.capture)

    async def run(
        self, timeout: float, *, expected_name: str | None, budget: float | None = None
    ) -> Peer:
        self.expected_name = expected_name
        budget = timeout if budget is None else budget
        try:
            with trio.fail_after(timeout):
                peer = await self._handshake(expected_name)
        except trio.TooSlowError:
            await trio.aclose_forcefully(self.ssl_stream)
            raise HandshakeTimeout(
                f"TLS handshake with {self.address} did not finish within {budget:g} s"
            ) from None
        except BaseException:
            await trio.aclose_forcefully(self.ssl_stream)
            raise
        return peer

    async def _handshake(self, expected_name: str | None) -> Peer:
        try:
            await self.ssl_stream.do_handshake()
        except trio.BrokenResourceError as exc:
            await self._flush_alert()
            raise self._failure(exc.__cause__) from None
        peer = self._check_peer(expected_name)
        try:
            if self.server_side:
                await self.ssl_stream.send_all(ACCEPTED)
            else:
                await self._receive_accepted()
        except trio.BrokenResourceError as exc:
            raise self._failure(exc.__cause__) from None
        return peer

    async def _receive_accepted(self) -> None:
        got = b""
        while len(got) < len(ACCEPTED):
            chunk = await self.ssl_stream.receive_some(len(ACCEPTED) - len(got))
            if not chunk:
                raise HandshakeFailed(
                    f"{self.address} closed the connection right after the TLS handshake "
                    f"without accepting us (our certificate {self.identity.fingerprint}); "
                    f"see the log on that host"
                )
            got += chunk
        if not hmac.compare_digest(got, ACCEPTED):
            raise HandshakeFailed(
                f"{self.address} does not speak the Remote PED peer link (unexpected bytes "
                f"after the TLS handshake)"
            )

    def _check_peer(self, expected_name: str | None) -> Peer:
        """After OpenSSL accepted: exactly a pinned leaf, valid now (belt and braces)."""
        der = self.ssl_stream.getpeercert(binary_form=True)
        if not der:
            raise self._reject(Side.THEIRS, RejectReason.NONE_PRESENTED, None)
        fp = fingerprint(der)
        match = next((p for p in self.trusted if hmac.compare_digest(p.fingerprint, fp)), None)
        if match is None:
            raise self._reject(Side.THEIRS, self._classify(fp, None, expected_name), fp)
        problem = validity_problem(match.certificate)
        if problem:
            reason = RejectReason.EXPIRED if problem == "expired" else RejectReason.NOT_YET_VALID
            raise self._reject(Side.THEIRS, reason, fp, cert=match.certificate)
        return match

    def _failure(self, cause: BaseException | None) -> Exception:
        """Map a failed handshake to the error for our log."""
        reason_name = getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None
        seen = fingerprint(self.capture.der) if self.capture.der else None
        if (
            isinstance(cause, ssl.SSLCertVerificationError)
            or reason_name == "CERTIFICATE_VERIFY_FAILED"
        ):
            code = getattr(cause, "verify_code", None)
            reason = self._classify(seen, code, self.expected_name)
            cert = _parse(self.capture.der)
            return self._reject(Side.THEIRS, reason, seen, cert=cert)
        if reason_name == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return self._reject(Side.THEIRS, RejectReason.NONE_PRESENTED, None)
        if reason_name == "BAD_SIGNATURE":
            return self._reject(Side.THEIRS, RejectReason.WRONG_KEY, seen)
        if reason_name in _ALERT_REASONS:
            return self._reject(Side.OURS, _ALERT_REASONS[reason_name], self.identity.fingerprint)
        if reason_name in _PROTOCOL_REASONS:
            return HandshakeFailed(
                f"TLS handshake with {self.address} failed: the other end does not speak TLS "
                f"1.3 ({reason_name}); both ends need OpenSSL 1.1.1 or later"
            )
        if cause is None or isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            who = "dialler" if self.server_side else "listener"
            return HandshakeFailed(
                f"{self.address} closed the connection during the TLS handshake; the "
                f"{who} may have refused our certificate {self.identity.fingerprint}: see "
                f"its log"
            )
        return HandshakeFailed(
            f"TLS handshake with {self.address} failed ({reason_name or type(cause).__name__})"
        )

    def _classify(
        self, fp: str | None, verify_code: int | None, expected: str | None
    ) -> RejectReason:
        if fp is not None:
            registered = self.snap.by_fingerprint(fp)
            if registered is not None:
                if expected is not None and registered.name != expected:
                    return RejectReason.NOT_EXPECTED
                problem = validity_problem(registered.certificate)
                if problem == "expired":
                    return RejectReason.EXPIRED
                if problem == "not yet valid":
                    return RejectReason.NOT_YET_VALID
                return RejectReason.BAD_CERTIFICATE
            if self.snap.tombstone(fp) is not None:
                return RejectReason.DELETED
            return RejectReason.UNKNOWN
        if verify_code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return RejectReason.EXPIRED
        if verify_code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return RejectReason.NOT_YET_VALID
        return RejectReason.UNKNOWN

    def _reject(
        self,
        side: Side,
        reason: RejectReason,
        fp: str | None,
        *,
        cert: x509.Certificate | None = None,
    ) -> PeerRejected:
        fix = fix_command(self.snap, side, reason, fp, server_side=self.server_side)
        if side is Side.THEIRS:
            role = _other(self.snap.program)
            what = f"certificate {fp}" if fp else "certificate"
            msg = f"refused {role} at {self.address}: its {what} is {reason.value}"
            if cert is not None and reason in (RejectReason.EXPIRED, RejectReason.NOT_YET_VALID):
                start, end = _when(cert.not_valid_before_utc), _when(cert.not_valid_after_utc)
                msg += f" (valid {start} to {end})"
        else:
            other = _other(self.snap.program)
            msg = f"{other} at {self.address} refused our certificate {fp}: {reason.value} there"
        return PeerRejected(
            f"{msg}; fix: {fix}",
            side=side,
            reason=reason,
            fingerprint=fp,
            peer=self.address,
            fix=fix,
        )

    async def _flush_alert(self) -> None:
        # trio drops the alert OpenSSL wrote for a failed handshake; send it so the other
        # end learns why (unknown_ca, certificate_expired...) instead of seeing an EOF.
        outgoing = getattr(self.ssl_stream, "_outgoing", None)
        if not isinstance(outgoing, ssl.MemoryBIO):
            return
        pending = outgoing.read()
        if pending:
            with trio.move_on_after(_ALERT_FLUSH_TIMEOUT):
                try:
                    await self.transport.send_all(pending)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass


def fix_command(
    snap: PinSnapshot, side: Side, reason: RejectReason, fp: str | None, *, server_side: bool
) -> str:
    """The command (on this host or the other) that makes the refused handshake work."""
    me: Program = snap.program
    other = "pedclient" if me == "pedserver" else "pedserver"
    noun = "appliance" if me == "pedserver" else "peer"
    other_noun = "peer" if me == "pedserver" else "appliance"
    addr = " --ip ADDRESS [--port 9697]" if me == "pedserver" else ""
    other_addr = " --ip ADDRESS [--port 9697]" if other == "pedserver" else ""
    register = f"{me} {noun} register --name NAME --certificate FILE{addr}"
    if side is Side.OURS:
        share = f"(write FILE here with: {me} certificate export FILE)"
        there = f"on that host run: {other} {other_noun} register --name NAME --certificate FILE"
        if reason in (RejectReason.UNKNOWN, RejectReason.DELETED):
            return f"{there}{other_addr} {share}"
        if reason in (
            RejectReason.EXPIRED,
            RejectReason.NOT_YET_VALID,
            RejectReason.BAD_CERTIFICATE,
        ):
            return (
                f"check both clocks; else make a new certificate with: {me} certificate regen, "
                f"and register it there again {share}"
            )
        return f"check this host's identity with: {me} certificate show (or {me} certificate regen)"
    if reason is RejectReason.UNKNOWN:
        return (
            f"if you trust it (ask the other side for `{other} certificate show` and compare "
            f"the fingerprint), get the file from `{other} certificate export FILE` and "
            f"register it with: {register}"
        )
    if reason is RejectReason.DELETED:
        tomb = snap.tombstone(fp) if fp else None
        name = tomb.name if tomb else "NAME"
        when = f" on {tomb.deleted_at}" if tomb else ""
        return (
            f"it was registered as {name!r} and deleted{when}; to trust it again: "
            f"{me} {noun} register --name {name} --certificate FILE{addr}"
        )
    if reason in (RejectReason.EXPIRED, RejectReason.NOT_YET_VALID):
        reg = snap.by_fingerprint(fp) if fp else None
        name = reg.name if reg else "NAME"
        return (
            f"check both clocks; else the other side runs `{other} certificate regen` and "
            f"you replace it: {me} {noun} delete --name {name}, then "
            f"{register.replace('NAME', name)}"
        )
    if reason is RejectReason.NONE_PRESENTED:
        return f"the other end must be {other} in peer-to-peer mode, presenting its certificate"
    if reason is RejectReason.WRONG_KEY:
        return (
            f"the other end shows the certificate without holding its private key (an "
            f"impostor, or a damaged identity): compare `{other} certificate show` there"
        )
    if reason is RejectReason.NOT_EXPECTED:
        reg = snap.by_fingerprint(fp) if fp else None
        name = reg.name if reg else "another name"
        return (
            f"that address answers as {noun} {name!r}: check the addresses with: {me} {noun} list"
        )
    return f"compare `{other} certificate show` there with `{me} {noun} list` here"


def _other(program: Program) -> str:
    return "pedclient" if program == "pedserver" else "pedserver"


def _parse(der: bytes | None) -> x509.Certificate | None:
    if der is None:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        return None


def _when(t: datetime.datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer_address(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
    except (AttributeError, OSError, TypeError, ValueError):
        return "the peer"
    return _format_address(str(host), int(port))
