"""Standard-library `ssl` contexts for the pinned, mutual TLS 1.3 peer link.

Theory of operation
-------------------
One context is made per connection from a fresh snapshot of the pin registry, so a
registration or deletion applies to the next handshake while the daemon runs, and no
TLS session is ever resumed (a resumed session would skip the certificate check).

Both ends:

* speak TLS 1.3 only (minimum = maximum = TLSv1_3);
* present their own certificate (`Identity`);
* require the peer's certificate (``CERT_REQUIRED``; on the server this also makes
  OpenSSL refuse a client that presents none);
* trust exactly the pinned certificates: they are loaded as the only trust anchors,
  with ``VERIFY_X509_PARTIAL_CHAIN`` so that a pinned *end-entity* certificate (ours say
  CA:FALSE) is itself an anchor, and ``VERIFY_X509_STRICT``.  OpenSSL then refuses an
  unknown, expired or not-yet-valid certificate during the handshake and tells the other
  end why with a TLS alert (unknown_ca, certificate_expired, bad_certificate,
  certificate_required).  It also checks, whatever the verify mode, that the peer's
  CertificateVerify signature was made with the certificate's key: a peer that shows a
  copy of a pinned certificate without its private key fails there.
* After the handshake `stream` compares the SHA-256 fingerprint of the peer's leaf
  certificate with the pins (``hmac.compare_digest``): exactly the pinned certificate,
  nothing that merely chains to one.

The standard library has no verify callback, so when OpenSSL refuses a certificate we
would not learn which one it was.  `CertificateCapture` uses the context's TLS message
hook (``SSLContext._msg_callback``, present since Python 3.8; private, so used for
diagnostics only and skipped when absent) to keep a copy of the peer's Certificate
message and name its fingerprint in the error.  It never decides anything.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ped.tls.certs import Identity
from ped.tls.errors import IdentityError

_HANDSHAKE = 22  # TLS content type
_CERTIFICATE = 11  # TLS handshake message type
_MAX_CAPTURE = 64 * 1024


def make_context(
    identity: Identity, trusted: Iterable[x509.Certificate], *, server_side: bool
) -> ssl.SSLContext:
    """A TLS 1.3-only, mutual, pinned context trusting exactly *trusted*."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the pin identifies the peer, not a DNS name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    ctx.options |= ssl.OP_NO_TICKET
    if server_side:
        ctx.num_tickets = 0  # no resumption: every connection is checked against the pins
    try:
        ctx.load_cert_chain(identity.path)
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(
            f"{identity.path}: TLS cannot use this identity ({exc}); create a new one with "
            f"`certificate regen` and register it again on the other side"
        ) from None
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in trusted)
    if pem:
        ctx.load_verify_locations(cadata=pem)
    # With no anchors at all OpenSSL refuses every certificate, as it should.
    return ctx


class CertificateCapture:
    """Keeps the DER of the first certificate the *peer* sends (diagnostics only)."""

    def __init__(self) -> None:
        self.der: bytes | None = None
        self.presented_none = False

    def install(self, ctx: ssl.SSLContext) -> bool:
        """Hook into *ctx*; False when this Python has no message hook."""
        if not hasattr(ctx, "_msg_callback"):
            return False
        ctx._msg_callback = self._on_message  # type: ignore[attr-defined]
        return True

    def _on_message(
        self,
        conn: Any,
        direction: str,
        version: Any,
        content_type: Any,
        msg_type: Any,
        data: bytes,
    ) -> None:
        # Called by OpenSSL for every TLS message, decrypted.  Must never raise.
        try:
            if direction != "read" or int(content_type) != _HANDSHAKE:
                return
            if not data or data[0] != _CERTIFICATE or self.der is not None:
                return
            der = parse_certificate_message(bytes(data[:_MAX_CAPTURE]))
            if der is None:
                self.presented_none = True
            else:
                self.der = der
        except Exception:  # noqa: S110 - a diagnostic hook must not break the handshake
            pass


def parse_certificate_message(msg: bytes) -> bytes | None:
    """The first certificate's DER in a TLS 1.3 Certificate handshake message.

    Layout (RFC 8446 4.4.2): type(1) length(3) context<0..255>
    certificate_list<0..2^24-1> of { cert_data<1..2^24-1>, extensions<0..2^16-1> }.
    Returns None for an empty list (a peer that presents no certificate); raises
    ValueError for a malformed message.
    """
    if len(msg) < 4 or msg[0] != _CERTIFICATE:
        raise ValueError("not a Certificate message")
    body = msg[4 : 4 + int.from_bytes(msg[1:4], "big")]
    if not body:
        raise ValueError("empty Certificate message")
    pos = 1 + body[0]
    list_len = int.from_bytes(body[pos : pos + 3], "big")
    pos += 3
    if list_len == 0:
        return None
    cert_len = int.from_bytes(body[pos : pos + 3], "big")
    pos += 3
    der = body[pos : pos + cert_len]
    if cert_len == 0 or len(der) != cert_len:
        raise ValueError("truncated certificate entry")
    return der
