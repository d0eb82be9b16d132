"""Standard-library `ssl` contexts for the pinned, mutual TLS 1.3 peer link.

Theory of operation
-------------------
Every handshake starts from a fresh snapshot of the pin registry and a fresh reading of
our identity, so a registration, a deletion or a `certificate regen` applies to the next
handshake while the daemon runs.  Building an ``SSLContext`` (OpenSSL 3 context, key and
trust anchors) costs about as much CPU as the handshake itself, so `ContextCache` keeps
the few most recent contexts, keyed by everything they are built from: our identity's
file and fingerprint, the side and the exact set of trusted fingerprints.  Any change in
the registry or the identity is a different key, hence a new context.  No TLS session is
ever resumed (a resumed session would skip the certificate check): the server issues no
tickets and the client never offers a session, shared context or not.

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
message and name its fingerprint in the error.  It never decides anything.  On a shared
context the hook is a `CaptureRouter`, which hands each connection's messages to that
connection's capture (the hook is called with the connection's ``SSLObject``).

OpenSSL calls the hook for every record of the connection's whole life (two calls per
record after the handshake), not only during the handshake.  The hook is therefore set
on the C-level context (`_set_hook`), with plain integers, instead of through
``ssl.SSLContext._msg_callback``, whose Python wrapper turns three integers into enum
members per call: that cost about 15% of the CPU of a handshake plus a short link, in
both daemons.  The router drops everything but a handshake message read from the peer
before looking anything up.
"""

from __future__ import annotations

import ssl
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ped.tls.certs import Identity
from ped.tls.errors import IdentityError

_HANDSHAKE = 22  # TLS content type
_CERTIFICATE = 11  # TLS handshake message type
_MAX_CAPTURE = 64 * 1024
#: The C-level message hook of `ssl` contexts (None on a Python without it).
_HOOK: Any = getattr(getattr(ssl, "_SSLContext", None), "_msg_callback", None)


def _get_hook(ctx: ssl.SSLContext) -> Any:
    return _HOOK.__get__(ctx) if _HOOK is not None else None


def _set_hook(ctx: ssl.SSLContext, hook: Any) -> bool:
    """Set *hook* as *ctx*'s raw message hook (called with integers); False if none."""
    if _HOOK is None:
        return False
    _HOOK.__set__(ctx, hook)
    return True


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
        """Hook into *ctx*; False when this Python has no message hook.

        On a shared context (whose hook is a `CaptureRouter`) the hook stays; the caller
        then registers this capture for its connection with `CaptureRouter.register`.
        """
        if _HOOK is None:
            return False
        if not isinstance(_get_hook(ctx), CaptureRouter):
            _set_hook(ctx, self._on_message)
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


class CaptureRouter:
    """The message hook of a shared context: each connection's messages go to its capture.

    Connections are held weakly: a finished handshake leaves nothing behind.
    """

    def __init__(self) -> None:
        self._captures: weakref.WeakKeyDictionary[Any, CertificateCapture] = (
            weakref.WeakKeyDictionary()
        )

    def register(self, conn: Any, capture: CertificateCapture) -> None:
        self._captures[conn] = capture

    def __call__(
        self,
        conn: Any,
        direction: str,
        version: Any,
        content_type: Any,
        msg_type: Any,
        data: bytes,
    ) -> None:
        # Called for every record of every connection on the context: leave at once
        # unless it is a handshake message from the peer (what a capture looks at).
        if content_type != _HANDSHAKE or direction != "read":
            return
        try:
            capture = self._captures.get(conn)
        except TypeError:  # not weak-referenceable: not one of ours
            return
        if capture is not None:
            capture._on_message(conn, direction, version, content_type, msg_type, data)


class ContextCache:
    """The *size* most recently used contexts, keyed by what they are built from.

    ``get`` returns ``(context, router)``; *router* is None when this Python has no
    message hook.  The key holds the identity's path and fingerprint (a regenerated
    identity is a new key), the side, and the sorted trusted fingerprints (a registry
    change is a new key); equal keys make contexts that behave identically.
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._items: OrderedDict[tuple[object, ...], tuple[ssl.SSLContext, CaptureRouter | None]]
        self._items = OrderedDict()

    def get(
        self,
        identity: Identity,
        trusted: Iterable[tuple[str, x509.Certificate]],
        *,
        server_side: bool,
    ) -> tuple[ssl.SSLContext, CaptureRouter | None]:
        pairs = sorted(trusted, key=lambda pair: pair[0])
        key = (
            str(identity.path),
            identity.fingerprint,
            server_side,
            tuple(fp for fp, _ in pairs),
        )
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        ctx = make_context(identity, [cert for _, cert in pairs], server_side=server_side)
        router: CaptureRouter | None = CaptureRouter()
        if not _set_hook(ctx, router):
            router = None
        self._items[key] = (ctx, router)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return ctx, router

    def clear(self) -> None:
        self._items.clear()


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
