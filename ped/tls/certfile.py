"""Reading certificate PEM files: a peer's for registration, ours inside the identity file.

Anything but exactly one well-formed, self-signed X.509 v3 certificate whose signature
verifies with its own public key is refused with a typed error naming the file and
what to do.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from ped.tls.errors import (
    CertificateTooLarge,
    NotACertificate,
    NotPem,
    UnsupportedCertificate,
    WrongKeyForCertificate,
)

#: No certificate we make or accept comes near this; bounds what we read from a file.
MAX_PEM_BYTES = 64 * 1024
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def load_certificate(path: str | os.PathLike[str]) -> x509.Certificate:
    """Read a peer's certificate file for registration (see `load_certificate_pem`)."""
    try:
        data = read_bounded(Path(path))
    except FileNotFoundError:
        raise NotACertificate(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotACertificate(f"{path}: is a directory, not a certificate file") from None
    except OSError as exc:
        raise NotACertificate(f"{path}: cannot read ({exc.strerror})") from None
    return load_certificate_pem(data, source=str(path))


def load_certificate_pem(data: bytes, *, source: str = "certificate") -> x509.Certificate:
    """Parse and check one peer certificate in PEM form.

    Raises `NotPem`, `NotACertificate`, `CertificateTooLarge`,
    `UnsupportedCertificate` or `WrongKeyForCertificate` (its self-signature does not
    verify with its own public key), each naming *source*.
    """
    if len(data) > MAX_PEM_BYTES:
        raise CertificateTooLarge(
            f"{source}: {len(data)} bytes is larger than any "
            f"certificate ({MAX_PEM_BYTES} bytes at most)"
        )
    return parse_single_certificate(data, source=source, allow_key=False)


def check_self_signed(cert: x509.Certificate, *, source: str) -> None:
    """Refuse a certificate that is not a v3, self-signed one made with its own key."""
    hint = "ask the other side for the file written by `certificate export`"
    try:
        if cert.version is not x509.Version.v3:
            raise UnsupportedCertificate(f"{source}: an X.509 version 1 certificate; {hint}")
        with warnings.catch_warnings():  # cryptography warns on a non-positive serial
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            serial = cert.serial_number
        if not 0 < serial < 2**160:
            raise UnsupportedCertificate(
                f"{source}: the serial number is not a positive number of at most 20 "
                f"octets (RFC 5280 4.1.2.2); {hint}"
            )
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < 2048:
            raise UnsupportedCertificate(
                f"{source}: RSA key of {pub.key_size} bits is too weak (2048 at least); {hint}"
            )
        if not isinstance(
            pub,
            ec.EllipticCurvePublicKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PublicKey
            | rsa.RSAPublicKey,
        ):
            raise UnsupportedCertificate(f"{source}: unsupported public key type; {hint}")
        if cert.issuer != cert.subject:
            raise UnsupportedCertificate(
                f"{source}: not self-signed (issued by "
                f"{cert.issuer.rfc4514_string()}); pinning takes "
                f"the peer's own self-signed certificate; {hint}"
            )
        try:
            cert.verify_directly_issued_by(cert)
        except InvalidSignature:
            raise WrongKeyForCertificate(
                f"{source}: wrong key for the certificate (its signature does not verify "
                f"with its own public key: damaged or forged); {hint}"
            ) from None
        # Touch every extension so that a malformed one fails here, not in the daemon.
        for _ext in cert.extensions:
            pass
        cert.not_valid_before_utc  # noqa: B018
        cert.not_valid_after_utc  # noqa: B018
    except (UnsupportedCertificate, WrongKeyForCertificate):
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as e:
        raise UnsupportedCertificate(
            f"{source}: the certificate cannot be checked ({type(e).__name__}); {hint}"
        ) from None
    except Exception as e:
        # cryptography parses extensions lazily and its exception set grows; whatever it
        # raises on a hostile file must still be a typed error naming the file.
        raise UnsupportedCertificate(
            f"{source}: the certificate cannot be checked ({type(e).__name__}); {hint}"
        ) from None


def read_bounded(path: Path) -> bytes:
    """The file's bytes; `CertificateTooLarge` past `MAX_PEM_BYTES`."""
    with open(path, "rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise CertificateTooLarge(
            f"{path}: larger than {MAX_PEM_BYTES} bytes: not a certificate file"
        )
    return data


def parse_single_certificate(data: bytes, *, source: str, allow_key: bool) -> x509.Certificate:
    """The one CERTIFICATE block of *data*, checked (a PRIVATE KEY only if *allow_key*)."""
    labels = _PEM_BLOCK.findall(data)
    if not labels:
        raise NotPem(
            f"{source}: not PEM text (no '-----BEGIN CERTIFICATE-----' line); "
            f"give the file written by `certificate export`"
        )
    if not allow_key and any(b"PRIVATE KEY" in label for label in labels):
        raise NotACertificate(
            f"{source}: contains a PRIVATE KEY; never hand out that file: "
            f"give the certificate written by `certificate export` instead"
        )
    certs = [label for label in labels if label == b"CERTIFICATE"]
    if not certs:
        kinds = ", ".join(sorted({lb.decode("ascii") for lb in labels}))
        raise NotACertificate(f"{source}: holds {kinds}, not a CERTIFICATE")
    if len(certs) > 1:
        raise NotACertificate(
            f"{source}: holds {len(certs)} certificates; give exactly one "
            f"(the peer's own, from `certificate export`)"
        )
    start = data.index(b"-----BEGIN CERTIFICATE-----")
    try:
        with warnings.catch_warnings():
            # A non-positive serial only warns today; it is refused below.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_pem_x509_certificate(data[start:])
    except (ValueError, x509.InvalidVersion):
        raise NotACertificate(
            f"{source}: the CERTIFICATE block is damaged (not valid base64 DER X.509)"
        ) from None
    check_self_signed(cert, source=source)
    return cert
