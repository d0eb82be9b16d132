"""docs/protocol/tls.md's vectors: the certificate, its fingerprint and its pin record."""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ped.tls import PinStore, certs
from ped.tls.certfile import load_certificate_pem
from tests.ped.vectors.blocks import REPO, document_vectors

TLS_MD = REPO / "docs" / "protocol" / "tls.md"
WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _vectors() -> tuple[dict[str, str], x509.Certificate]:
    vectors = document_vectors(TLS_MD)
    return vectors, x509.load_der_x509_certificate(bytes.fromhex(vectors["tls_certificate"]))


def test_fingerprint_and_key_identifier() -> None:
    vectors, cert = _vectors()
    assert (
        certs.fingerprint(bytes.fromhex(vectors["tls_certificate"])) == vectors["tls_fingerprint"]
    )
    assert certs.fingerprint(cert) == vectors["tls_fingerprint"]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski.digest.hex() == vectors["tls_subject_key_identifier"]
    scalar = int.from_bytes(bytes.fromhex(vectors["tls_identity_private"]), "big")
    public = ec.derive_private_key(scalar, ec.SECP256R1()).public_key()
    raw = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    assert cert.public_key().public_bytes(*raw) == public.public_bytes(*raw)


def test_the_certificate_has_the_form_daemons_make() -> None:
    _, cert = _vectors()
    _, fresh = certs.generate_certificate("ws-01", now=WHEN)
    assert [e.oid for e in cert.extensions] == [e.oid for e in fresh.extensions]
    for ext in fresh.extensions:
        if ext.oid in (
            x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ):
            continue  # they name the key, which differs
        assert cert.extensions.get_extension_for_oid(ext.oid) == ext
    assert cert.subject == cert.issuer == fresh.subject
    assert cert.not_valid_before_utc == fresh.not_valid_before_utc
    assert cert.not_valid_after_utc == fresh.not_valid_after_utc
    pem = certs.certificate_pem(cert)
    assert load_certificate_pem(pem) == cert  # it passes the checks of a peer's certificate


def test_the_pin_record(tmp_path: Path) -> None:
    vectors, cert = _vectors()
    store = PinStore(tmp_path / "pedclient", program="pedclient")
    peer = store.register("ws-01", certs.certificate_pem(cert), now=WHEN)
    assert peer.fingerprint == vectors["tls_fingerprint"]
    with sqlite3.connect(tmp_path / "pedclient" / "pins.sqlite3") as db:
        row = db.execute("SELECT name, fingerprint, certificate, ip, port FROM peers").fetchone()
    assert row == (
        "ws-01",
        vectors["tls_fingerprint"],
        certs.certificate_pem(cert).decode(),
        None,
        None,
    )


def test_fingerprint_spellings_accepted() -> None:
    vectors, _ = _vectors()
    canonical = vectors["tls_fingerprint"]
    plain = canonical.replace(":", "")
    for form in (plain.lower(), plain, "sha256:" + plain.lower(), canonical.lower()):
        assert certs.normalize_fingerprint(form) == canonical
