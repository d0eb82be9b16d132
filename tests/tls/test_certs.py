"""Identities and certificate files: RFC 5280 shape, strict verification, typed errors."""

from __future__ import annotations

import datetime
import os
import ssl
import stat

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ped.tls import certfile, certs
from ped.tls.errors import (
    CertificateTooLarge,
    IdentityError,
    NotACertificate,
    NotPem,
    UnsupportedCertificate,
    WrongKeyForCertificate,
)


def test_certificate_is_rfc5280_strict(tmp_path) -> None:
    ident = certs.regenerate_identity(tmp_path, "pedserver ws-07")
    cert = ident.certificate
    assert cert.version is x509.Version.v3
    assert 0 < cert.serial_number < 2**159
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pedserver ws-07"
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)

    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert set(eku.value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value.digest == x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert not aki.critical and aki.value.key_identifier == ski.value.digest

    now = certs.utcnow()
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3640)
    cert.verify_directly_issued_by(cert)


def test_two_identities_differ(tmp_path) -> None:
    a = certs.regenerate_identity(tmp_path / "a", "x")
    b = certs.regenerate_identity(tmp_path / "b", "x")
    assert a.fingerprint != b.fingerprint
    assert a.certificate.serial_number != b.certificate.serial_number


async def test_strict_stdlib_verifier_accepts_it(tmp_path) -> None:
    """A client configured like Python 3.13's default (X509_STRICT, PARTIAL_CHAIN) that
    trusts only the certificate completes a handshake with it."""
    ident = certs.regenerate_identity(tmp_path, "strict")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(ident.path)
    client_ctx = ssl.create_default_context(cadata=ident.certificate_pem.decode())
    client_ctx.check_hostname = False
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    a, b = trio.testing.memory_stream_pair()
    client = trio.SSLStream(a, client_ctx)
    server = trio.SSLStream(b, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    assert client.getpeercert(binary_form=True) == ident.certificate.public_bytes(
        serialization.Encoding.DER
    )


def test_ensure_identity_makes_once_with_mode_0600(tmp_path) -> None:
    first = certs.ensure_identity(tmp_path / "home", "pedclient")
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    again = certs.ensure_identity(tmp_path / "home", "pedclient")
    assert again.fingerprint == first.fingerprint
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["identity.pem"]  # no temp left
    regen = certs.regenerate_identity(tmp_path / "home", "pedclient")
    assert regen.fingerprint != first.fingerprint
    assert certs.load_identity(tmp_path / "home").fingerprint == regen.fingerprint
    assert "PRIVATE" not in repr(regen)


def test_load_identity_errors(tmp_path) -> None:
    home = tmp_path / "h"
    with pytest.raises(IdentityError, match=r"no identity yet.*certificate regen"):
        certs.load_identity(home)
    a = certs.regenerate_identity(tmp_path / "a", "a")
    b = certs.regenerate_identity(tmp_path / "b", "b")
    key_a = a.path.read_bytes().split(b"-----BEGIN CERTIFICATE-----")[0]
    cert_b = b.certificate_pem
    home.mkdir()
    certs.atomic_write(home / "identity.pem", key_a + cert_b, mode=0o600)
    with pytest.raises(IdentityError, match="wrong key for the certificate"):
        certs.load_identity(home)
    certs.atomic_write(home / "identity.pem", cert_b, mode=0o600)
    with pytest.raises(IdentityError, match="no readable unencrypted private key"):
        certs.load_identity(home)
    certs.atomic_write(home / "identity.pem", a.path.read_bytes(), mode=0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        certs.load_identity(home)
    # A damaged identity is never silently replaced: peers pinned it.
    with pytest.raises(IdentityError):
        certs.ensure_identity(home, "a")


def test_fingerprint_and_describe(tmp_path) -> None:
    ident = certs.regenerate_identity(tmp_path, "show me")
    fp = ident.fingerprint
    assert len(fp) == 95 and fp.count(":") == 31 and fp == fp.upper()
    der = ident.certificate.public_bytes(serialization.Encoding.DER)
    assert certs.fingerprint(der) == fp
    assert certs.normalize_fingerprint(fp.replace(":", "").lower()) == fp
    assert certs.normalize_fingerprint("sha256:" + fp.lower()) == fp
    with pytest.raises(ValueError):
        certs.normalize_fingerprint("abc")
    text = certs.describe(ident.certificate)
    assert "CN=show me" in text and fp in text and "ECDSA secp256r1" in text
    assert "Valid from:" in text and "Valid until:" in text


def test_export_writes_only_the_certificate(tmp_path) -> None:
    ident = certs.regenerate_identity(tmp_path / "h", "exp")
    out = tmp_path / "exp.pem"
    certs.export_certificate(ident.certificate, out)
    data = out.read_bytes()
    assert b"PRIVATE" not in data
    assert certfile.load_certificate(out) == ident.certificate
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


def _other_signed(tmp_path, *, same_name: bool) -> bytes:
    """A certificate for key A whose signature is made with key B."""
    key_a = ec.generate_private_key(ec.SECP256R1())
    key_b = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")])
    issuer = name if same_name else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CA")])
    now = certs.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key_a.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key_b, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_load_certificate_typed_errors(tmp_path) -> None:
    ident = certs.regenerate_identity(tmp_path / "h", "x")
    pem = ident.certificate_pem
    cases = [
        (b"hello", NotPem, "not PEM"),
        (b"", NotPem, "not PEM"),
        (ident.path.read_bytes(), NotACertificate, "PRIVATE KEY"),
        (pem + pem, NotACertificate, "2 certificates"),
        (
            pem.replace(b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN CERTIFICATE-----\n!!"),
            NotACertificate,
            "damaged",
        ),
        (
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            NotACertificate,
            "PUBLIC KEY",
        ),
        (_other_signed(tmp_path, same_name=True), WrongKeyForCertificate, "wrong key"),
        (_other_signed(tmp_path, same_name=False), UnsupportedCertificate, "not self-signed"),
        (b"-" * (certfile.MAX_PEM_BYTES + 1), CertificateTooLarge, "larger"),
    ]
    for data, error, words in cases:
        path = tmp_path / "c.pem"
        path.write_bytes(data)
        with pytest.raises(error, match=words) as info:
            certfile.load_certificate(path)
        assert str(path) in str(info.value)
    with pytest.raises(NotACertificate, match="no such file"):
        certfile.load_certificate(tmp_path / "missing.pem")
    with pytest.raises(NotACertificate, match="directory"):
        certfile.load_certificate(tmp_path)


def test_weak_rsa_is_unsupported(tmp_path) -> None:
    key = rsa.generate_private_key(65537, 1024)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak")])
    now = certs.utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(UnsupportedCertificate, match="too weak"):
        certfile.load_certificate_pem(cert.public_bytes(serialization.Encoding.PEM))


def test_generate_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="common name"):
        certs.generate_certificate("")
    with pytest.raises(ValueError, match="common name"):
        certs.generate_certificate("x" * 65)
    with pytest.raises(ValueError, match="days"):
        certs.generate_certificate("x", days=0)


def test_negative_serial_is_refused(tmp_path) -> None:
    import base64

    _, cert = certs.generate_certificate("neg")
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    assert der[13] == 0x02  # tbsCertificate: version [0] (5 bytes at 8..12), then serial
    der[15] |= 0x80  # the serial's first octet: now a negative INTEGER
    pem = (
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(UnsupportedCertificate, match="serial number is not a positive"):
        certfile.load_certificate_pem(pem)
