"""One pinned TLS 1.3 handshake: its `ssl` context, the pin check, and every failure mapped
to a typed error that names the fingerprint, the reason and the fix."""

from __future__ import annotations

import datetime
import hmac
import ssl
from collections.abc import Sequence

import trio
from cryptography import x509

from ped.tls.advice import fix_command, other_program
from ped.tls.certs import Identity, fingerprint, validity_problem
from ped.tls.context import CertificateCapture, ContextCache
from ped.tls.errors import (
    CertificateSide,
    HandshakeTimeout,
    PeerRejected,
    RejectReason,
    TlsHandshakeFailed,
)
from ped.tls.identity_cache import identity_of_file
from ped.tls.pins import Peer, PinSnapshot

#: What the listener sends, inside TLS, once it has accepted the dialler's certificate.
ACCEPTED = b"RPED-TLS-OK\n"
#: Contexts shared by handshakes that would build identical ones (see ped.tls.context).
_CONTEXTS = ContextCache()
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


class Handshake:
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
        self.identity = identity_of_file(identity.path)
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
                raise TlsHandshakeFailed(
                    f"{self.address} closed the connection right after the TLS handshake "
                    f"without accepting us (our certificate {self.identity.fingerprint}); "
                    f"see the log on that host"
                )
            got += chunk
        if not hmac.compare_digest(got, ACCEPTED):
            raise TlsHandshakeFailed(
                f"{self.address} does not speak the Remote PED peer link (unexpected bytes "
                f"after the TLS handshake)"
            )

    def _check_peer(self, expected_name: str | None) -> Peer:
        """After OpenSSL accepted: exactly a pinned leaf, valid now (belt and braces)."""
        der = self.ssl_stream.getpeercert(binary_form=True)
        if not der:
            raise self._reject(CertificateSide.THEIRS, RejectReason.NONE_PRESENTED, None)
        fp = fingerprint(der)
        match = next((p for p in self.trusted if hmac.compare_digest(p.fingerprint, fp)), None)
        if match is None:
            raise self._reject(CertificateSide.THEIRS, self._classify(fp, None, expected_name), fp)
        problem = validity_problem(match.certificate)
        if problem:
            reason = RejectReason.EXPIRED if problem == "expired" else RejectReason.NOT_YET_VALID
            raise self._reject(CertificateSide.THEIRS, reason, fp, cert=match.certificate)
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
            return self._reject(CertificateSide.THEIRS, reason, seen, cert=cert)
        if reason_name == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return self._reject(CertificateSide.THEIRS, RejectReason.NONE_PRESENTED, None)
        if reason_name == "BAD_SIGNATURE":
            return self._reject(CertificateSide.THEIRS, RejectReason.WRONG_KEY, seen)
        if reason_name in _ALERT_REASONS:
            return self._reject(
                CertificateSide.OURS, _ALERT_REASONS[reason_name], self.identity.fingerprint
            )
        if reason_name in _PROTOCOL_REASONS:
            return TlsHandshakeFailed(
                f"TLS handshake with {self.address} failed: the other end does not speak TLS "
                f"1.3 ({reason_name}); both ends need OpenSSL 1.1.1 or later"
            )
        if cause is None or isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            who = "dialler" if self.server_side else "listener"
            return TlsHandshakeFailed(
                f"{self.address} closed the connection during the TLS handshake; the "
                f"{who} may have refused our certificate {self.identity.fingerprint}: see "
                f"its log"
            )
        return TlsHandshakeFailed(
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
        side: CertificateSide,
        reason: RejectReason,
        fp: str | None,
        *,
        cert: x509.Certificate | None = None,
    ) -> PeerRejected:
        fix = fix_command(self.snap, side, reason, fp, server_side=self.server_side)
        if side is CertificateSide.THEIRS:
            role = other_program(self.snap.program)
            what = f"certificate {fp}" if fp else "certificate"
            msg = f"refused {role} at {self.address}: its {what} is {reason.value}"
            if cert is not None and reason in (RejectReason.EXPIRED, RejectReason.NOT_YET_VALID):
                start, end = _when(cert.not_valid_before_utc), _when(cert.not_valid_after_utc)
                msg += f" (valid {start} to {end})"
        else:
            other = other_program(self.snap.program)
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


def _parse(der: bytes | None) -> x509.Certificate | None:
    if der is None:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        return None


def _when(t: datetime.datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"
