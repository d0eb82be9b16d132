"""Each daemon's own TLS key pair and self-signed certificate, and peer certificate files.

Theory of operation
-------------------
pedserver and pedclient each own one *identity*: an ECDSA P-256 private key and a
self-signed certificate for it, kept together in one PEM file ``<home>/identity.pem``
(mode 0600, written atomically: a crash leaves the old identity or the new one, never a
key from one and a certificate from the other).  It is made on first start
(`ensure_identity`) or on demand (`regenerate_identity`); the certificate alone is
exported (`export_certificate`) and registered on the other side, which pins it by its
SHA-256 fingerprint (`fingerprint`).

Why ECDSA P-256 and not Ed25519: P-256 with SHA-256 (``ecdsa_secp256r1_sha256``) is the
signature scheme every TLS 1.3 stack must implement (RFC 8446 section 9.1), it is the one
FIPS builds of OpenSSL accept, and every OpenSSL version Python's ``ssl`` links to handles
it; Ed25519 certificates work with OpenSSL 3 but not with FIPS providers or older stacks.

The certificate follows RFC 5280 so that strict verifiers (OpenSSL's X509_STRICT, which
Python 3.13 turns on by default) accept it: version 3, a random positive serial of at
most 20 octets, a critical basicConstraints saying it is *not* a CA (so a pinned
certificate can never issue another one that chains to it), a critical keyUsage of
digitalSignature only, extendedKeyUsage serverAuth and clientAuth (either daemon can be
either end), a subjectKeyIdentifier and an authorityKeyIdentifier equal to it.

A *peer's* certificate file is read for registration by `ped.tls.certfile`.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import secrets
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ped.tls.certfile import parse_single_certificate, read_bounded
from ped.tls.errors import (
    CertificateTooLarge,
    IdentityError,
)

IDENTITY_FILE = "identity.pem"
#: Default validity.  Pinned certificates are re-registered by hand when they change, so a
#: long life is the practical choice; `regenerate_identity` replaces one at any time.
DEFAULT_VALIDITY_DAYS = 3650
#: Backdate notBefore a little so that a peer whose clock is slightly behind accepts a
#: certificate made a moment ago.
CLOCK_SKEW = datetime.timedelta(minutes=5)
_CN_MAX = 64  # ub-common-name in RFC 5280


@attrs.frozen
class Identity:
    """This daemon's certificate and the file that holds it with its private key.

    The private key is never kept in this object: `ssl` loads it from *path* when a
    context is made, so it is never in a repr or a traceback.
    """

    path: Path
    certificate: x509.Certificate = attrs.field(repr=False)
    fingerprint: str

    @property
    def certificate_pem(self) -> bytes:
        return certificate_pem(self.certificate)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """SHA-256 of the DER encoding, upper-case hex pairs joined by colons.

    Accepts a certificate object or its DER bytes (as from ``getpeercert(True)``).
    """
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:..``, ``abcd..`` or ``sha256:abcd..``; return the canonical form."""
    raw = text.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if len(raw) != 64 or any(c not in "0123456789abcdef" for c in raw):
        raise ValueError("a SHA-256 fingerprint is 64 hexadecimal digits")
    return ":".join(raw.upper()[i : i + 2] for i in range(0, 64, 2))


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate_certificate(
    common_name: str,
    *,
    days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-256 key and an RFC 5280 self-signed certificate valid from *now* for *days*.

    *now* exists so that tests and tools can make certificates that are already expired
    or not yet valid.
    """
    _check_common_name(common_name)
    if not 1 <= days <= 36500:
        raise ValueError("validity must be between 1 and 36500 days")
    now = now or utcnow()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_random_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def identity_pem(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytearray:
    """The identity file's content: PKCS#8 private key then the certificate."""
    out = bytearray(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    out += certificate_pem(cert)
    return out


def ensure_identity(home_dir: str | os.PathLike[str], common_name: str) -> Identity:
    """Load ``<home>/identity.pem``, making it first if it does not exist yet.

    An identity file that exists but is damaged is *not* replaced silently (peers have
    pinned it): `IdentityError` says to run ``certificate regen``.
    """
    path = Path(home_dir) / IDENTITY_FILE
    if not path.exists():
        return regenerate_identity(home_dir, common_name)
    return load_identity(home_dir)


def regenerate_identity(
    home_dir: str | os.PathLike[str],
    common_name: str,
    *,
    days: int = DEFAULT_VALIDITY_DAYS,
    now: datetime.datetime | None = None,
) -> Identity:
    """Make a new key pair and certificate, replacing any old one atomically.

    Every peer that pinned the old certificate must register the new one.
    """
    home = Path(home_dir)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = generate_certificate(common_name, days=days, now=now)
    content = identity_pem(key, cert)
    try:
        atomic_write(home / IDENTITY_FILE, content, mode=0o600)
    finally:
        content[:] = bytes(len(content))  # the key's PEM: wipe our copy
    return Identity(path=home / IDENTITY_FILE, certificate=cert, fingerprint=fingerprint(cert))


def load_identity(home_dir: str | os.PathLike[str]) -> Identity:
    """Load and check ``<home>/identity.pem``: one private key and its certificate."""
    path = Path(home_dir) / IDENTITY_FILE
    fix = "create a new one with `certificate regen` and register it again on the other side"
    try:
        data = bytearray(read_bounded(path))
    except FileNotFoundError:
        raise IdentityError(f"{path}: no identity yet; {fix}") from None
    except (OSError, CertificateTooLarge) as exc:
        raise IdentityError(f"{path}: cannot read the identity file ({exc}); {fix}") from None
    try:
        try:
            key = serialization.load_pem_private_key(bytes(data), password=None)
        except (ValueError, TypeError):
            raise IdentityError(f"{path}: no readable unencrypted private key; {fix}") from None
        cert = parse_single_certificate(bytes(data), source=str(path), allow_key=True)
    finally:
        data[:] = bytes(len(data))
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    ):
        raise IdentityError(f"{path}: unsupported private key type; {fix}")
    if key.public_key() != cert.public_key():
        raise IdentityError(
            f"{path}: wrong key for the certificate (the private key does "
            f"not match the certificate's public key); {fix}"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise IdentityError(
            f"{path}: the private key is readable by others (mode "
            f"{mode:04o}); run: chmod 600 {path}"
        )
    return Identity(path=path, certificate=cert, fingerprint=fingerprint(cert))


def describe(cert: x509.Certificate) -> str:
    """What ``certificate show`` prints: subject, validity, fingerprint, key, serial."""
    pub = cert.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        key = f"ECDSA {pub.curve.name}"
    elif isinstance(pub, rsa.RSAPublicKey):
        key = f"RSA {pub.key_size}"
    else:
        key = type(pub).__name__.removesuffix("PublicKey")
    return "\n".join(
        [
            f"Subject:             {cert.subject.rfc4514_string()}",
            f"Valid from:          {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
            f"Valid until:         {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
            f"SHA-256 fingerprint: {fingerprint(cert)}",
            f"Key:                 {key}",
            f"Serial:              {cert.serial_number:x}",
        ]
    )


def export_certificate(cert: x509.Certificate, path: str | os.PathLike[str]) -> None:
    """Write the certificate (never the key) as PEM to *path*, atomically, mode 0644."""
    atomic_write(Path(path), certificate_pem(cert), mode=0o644)


def validity_problem(cert: x509.Certificate, now: datetime.datetime | None = None) -> str | None:
    """``"expired"``, ``"not yet valid"`` or None when *cert* is valid at *now*."""
    now = now or utcnow()
    if now > cert.not_valid_after_utc:
        return "expired"
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    return None


def atomic_write(path: Path, data: bytes | bytearray, *, mode: int) -> None:
    """Write *data* to a new file next to *path*, fsync it, then rename it over *path*."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # the umask may have narrowed or widened nothing else
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where possible
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _check_common_name(common_name: str) -> None:
    if not 1 <= len(common_name) <= _CN_MAX or not common_name.isprintable():
        raise ValueError(f"common name must be 1 to {_CN_MAX} printable characters")


def _random_serial() -> int:
    # RFC 5280 4.1.2.2: positive, at most 20 octets; 159 random bits keep the top bit clear.
    while True:
        serial = secrets.randbits(159)
        if serial:
            return serial
