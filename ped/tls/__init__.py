"""Peer-to-peer (PED-initiated) link: pinned, mutual TLS 1.3 (see docs/protocol/tls.md).

`certs` makes and reads our identity, `certfile` reads peers' certificate files,
`identity_cache` re-reads ours when it changed, `pins` keeps the registry of pinned
peers, `context` builds the `ssl` contexts, `handshake` runs one handshake and maps its
failures (with `advice`, the fix to run), `stream` gives the trio shells (dial, accept,
serve), and `cli` the command lines.
"""

from ped.tls.certfile import load_certificate, load_certificate_pem
from ped.tls.certs import (
    Identity,
    describe,
    ensure_identity,
    export_certificate,
    fingerprint,
    load_identity,
    regenerate_identity,
)
from ped.tls.errors import (
    CertificateError,
    CertificateSide,
    HandshakeTimeout,
    PeerRejected,
    PeerUnreachable,
    PinError,
    RejectReason,
    TlsError,
    TlsHandshakeFailed,
)
from ped.tls.handshake import ACCEPTED
from ped.tls.identity_cache import current_identity
from ped.tls.pins import DEFAULT_PEER_PORT, Peer, PinStore
from ped.tls.stream import (
    accept_pinned_tls,
    open_pinned_tls_client,
    peer_fingerprint,
    serve_pinned_tls,
    start_pinned_tls_client,
)

__all__ = [
    "ACCEPTED",
    "DEFAULT_PEER_PORT",
    "CertificateError",
    "CertificateSide",
    "HandshakeTimeout",
    "Identity",
    "Peer",
    "PeerRejected",
    "PeerUnreachable",
    "PinError",
    "PinStore",
    "RejectReason",
    "TlsError",
    "TlsHandshakeFailed",
    "accept_pinned_tls",
    "current_identity",
    "describe",
    "ensure_identity",
    "export_certificate",
    "fingerprint",
    "load_certificate",
    "load_certificate_pem",
    "load_identity",
    "open_pinned_tls_client",
    "peer_fingerprint",
    "regenerate_identity",
    "serve_pinned_tls",
    "start_pinned_tls_client",
]
