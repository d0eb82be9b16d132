"""Typed errors of the peer-to-peer TLS layer.

Every message names what was wrong and the command that fixes it.  None contains key
material: certificates and fingerprints are public, private keys never leave `certs`.

Translated where: the daemons' peer-to-peer code (``pedserver.peer``, ``pedclient.peer``)
turns a failed dial or handshake into a log line with its fix and, for an HSM waiting
on pedclient, a ``ConnectCode``; the command lines (``ped.tls.cli``) into exit codes.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from ped.errors import PedError


class TlsError(PedError):
    """Base of every error raised by ``ped.tls``."""

    #: True when trying again later may succeed without anyone changing anything.  The
    #: kinds differ, so each family below says its own.
    retriable: ClassVar[bool]


# --- certificate files ---------------------------------------------------------------


class CertificateError(TlsError):
    """A certificate (or identity) file or PEM text cannot be used."""

    retriable = False


class NotPem(CertificateError):
    """The bytes are not PEM text (no ``-----BEGIN ...-----`` block)."""


class NotACertificate(CertificateError):
    """The PEM holds something other than one well-formed X.509 certificate."""


class CertificateTooLarge(CertificateError):
    """The file is larger than any certificate we would accept."""


class UnsupportedCertificate(CertificateError):
    """A well-formed certificate we will not pin (not self-signed, weak key, not v3...)."""


class WrongKeyForCertificate(CertificateError):
    """A signature or private key does not belong to the certificate's public key."""


class IdentityError(CertificateError):
    """This daemon's own key pair and certificate cannot be loaded."""


# --- the pin registry ------------------------------------------------------------------


class PinError(TlsError):
    """A change to or a lookup in the pinned peer registry failed."""

    retriable = False


class InvalidPeerName(PinError):
    """A peer name is empty, too long or has characters we do not allow."""


class InvalidAddress(PinError):
    """An IP address or port given for a peer is not valid."""


class DuplicateName(PinError):
    """A peer with this name is already registered."""


class DuplicateCertificate(PinError):
    """This certificate is already registered under another name."""


class UnknownName(PinError):
    """No peer with this name is registered."""


class RegistryError(PinError):
    """The registry file cannot be read or written."""


# --- the link --------------------------------------------------------------------------


class RejectReason(enum.Enum):
    """Why a certificate was refused (by us, or by the peer)."""

    UNKNOWN = "unknown (not registered)"
    DELETED = "deleted (its registration was removed)"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"
    NONE_PRESENTED = "none presented"
    WRONG_KEY = "wrong key for the certificate (its signature does not verify)"
    NOT_EXPECTED = "registered under another name than the one dialled"
    BAD_CERTIFICATE = "malformed or unusable"
    PROTOCOL = "not TLS 1.3"


class CertificateSide(enum.Enum):
    """Whose certificate was refused."""

    THEIRS = "theirs"  # we refused the peer's certificate
    OURS = "ours"  # the peer refused our certificate


class PeerRejected(TlsError):
    """A TLS handshake was refused because of a certificate.

    Attributes say what the log line says: *side* (whose certificate), *reason*,
    *fingerprint* (the SHA-256 fingerprint of the certificate in question, or None when
    none was presented), *peer* (``host:port`` of the other end) and *fix* (the command
    that fixes it).  Never retriable as is: someone has to run *fix* first.
    """

    retriable = False

    def __init__(
        self,
        message: str,
        *,
        side: CertificateSide,
        reason: RejectReason,
        fingerprint: str | None,
        peer: str,
        fix: str,
    ) -> None:
        super().__init__(message)
        self.side = side
        self.reason = reason
        self.fingerprint = fingerprint
        self.peer = peer
        self.fix = fix


class TlsHandshakeFailed(TlsError):
    """The TLS handshake failed for a reason that is not a certificate (garbage, EOF)."""

    retriable = False


class HandshakeTimeout(TlsHandshakeFailed):
    """The TCP connection or TLS handshake did not finish in time."""

    retriable = True


class PeerUnreachable(TlsError):
    """The TCP connection to the peer could not be opened."""

    retriable = True
