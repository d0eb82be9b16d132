"""Fuzz the certificate loader: any bytes give a certificate or a typed error, never
another exception."""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ped.tls import certfile, certs
from ped.tls.errors import CertificateError

_, _CERT = certs.generate_certificate("fuzz")
_PEM = certs.certificate_pem(_CERT)
_DER = base64.b64decode(b"".join(_PEM.splitlines()[1:-1]))
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(data: bytes) -> None:
    try:
        cert = certfile.load_certificate_pem(data, source="fuzz")
    except CertificateError as exc:
        assert "fuzz" in str(exc)
    else:
        cert.verify_directly_issued_by(cert)  # anything accepted is a valid self-signed cert


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _load(data)


@SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_inside_a_certificate_block(body: bytes) -> None:
    _load(
        b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(body) + b"-----END CERTIFICATE-----\n"
    )


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, len(_DER) - 1), st.integers(0, 255)), min_size=1, max_size=8)
)
@example(mutations=[(12, 1)])  # version field -> x509.InvalidVersion
@example(mutations=[(128, 0)])  # curve OID -> UnsupportedAlgorithm
def test_mutated_der(mutations: list[tuple[int, int]]) -> None:
    der = bytearray(_DER)
    for pos, value in mutations:
        der[pos] = value
    _load(
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE-----\n"
    )


@SETTINGS
@given(st.integers(0, len(_PEM)), st.integers(0, len(_PEM)), st.binary(max_size=16))
def test_spliced_pem(start: int, end: int, insert: bytes) -> None:
    start, end = min(start, end), max(start, end)
    _load(_PEM[:start] + insert + _PEM[end:])


@SETTINGS
@given(st.integers(1, len(_DER) - 1))
def test_truncated_der(cut: int) -> None:
    _load(
        b"-----BEGIN CERTIFICATE-----\n"
        + base64.encodebytes(_DER[:cut])
        + b"-----END CERTIFICATE-----\n"
    )
