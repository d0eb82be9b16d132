"""Key generation for the client path: AES, generic secrets, EC P-256 and Ed25519 key pairs.

Each generator checks its mechanism's template, makes the key with `cryptography` and
returns the object's attributes with the key value apart (a `bytearray` the caller seals
and wipes).  EC keys carry CKA_EC_PARAMS as the DER OID of the curve and their public
key's CKA_EC_POINT as a DER OCTET STRING around the uncompressed point, the form
pkcs11-tool and OpenSSL expect.
"""

from __future__ import annotations

import secrets

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hsm.token.template import Attrs, new_object
from ped.pkcs11.constants import CKA, CKK, CKM, CKO, CKR, name_of
from ped.pkcs11.token import Pkcs11Error

#: DER of OID 1.2.840.10045.3.1.7 (prime256v1 / secp256r1 / P-256).
P256_OID = bytes.fromhex("06082a8648ce3d030107")
#: DER of OID 1.3.101.112 (id-Ed25519) and the PrintableString "edwards25519" (PKCS#11 3.0).
ED25519_OID = bytes.fromhex("06032b6570")
ED25519_NAME = bytes.fromhex("130c") + b"edwards25519"

AES_SIZES = (16, 24, 32)
MAX_GENERIC_SECRET = 256


@attrs.frozen
class NewKey:
    """A generated key: its attributes and its value (private scalar or secret bytes)."""

    attributes: Attrs = attrs.field(repr=False)
    value: bytearray = attrs.field(repr=False)


def octet_string(data: bytes) -> bytes:
    """DER OCTET STRING around *data* (short form for < 128 bytes, else one length byte)."""
    if len(data) < 0x80:
        return bytes([0x04, len(data)]) + data
    return bytes([0x04, 0x81, len(data)]) + data


def unwrap_octet_string(der: bytes) -> bytes:
    """The content of a DER OCTET STRING (as CKA_EC_POINT holds it)."""
    if len(der) >= 2 and der[0] == 0x04:
        if der[1] < 0x80 and len(der) == 2 + der[1]:
            return der[2:]
        if der[1] == 0x81 and len(der) >= 3 and len(der) == 3 + der[2]:
            return der[3:]
    raise Pkcs11Error(CKR.GENERAL_ERROR, "a stored CKA_EC_POINT is not a DER OCTET STRING")


def generate_secret(mechanism: int, given: Attrs) -> NewKey:
    """CKM_AES_KEY_GEN or CKM_GENERIC_SECRET_KEY_GEN."""
    length = given.get(CKA.VALUE_LEN)
    if mechanism == CKM.AES_KEY_GEN:
        size = 32 if length is None else int(length)
        if size not in AES_SIZES:
            raise Pkcs11Error(
                CKR.KEY_SIZE_RANGE, f"an AES key has 16, 24 or 32 bytes (CKA_VALUE_LEN), not {size}"
            )
        key_type = CKK.AES
    elif mechanism == CKM.GENERIC_SECRET_KEY_GEN:
        size = 32 if length is None else int(length)
        if not 1 <= size <= MAX_GENERIC_SECRET:
            raise Pkcs11Error(
                CKR.KEY_SIZE_RANGE,
                f"a generic secret has 1-{MAX_GENERIC_SECRET} bytes (CKA_VALUE_LEN), not {size}",
            )
        key_type = CKK.GENERIC_SECRET
    else:
        raise Pkcs11Error(
            CKR.MECHANISM_INVALID,
            f"{name_of(CKM, mechanism)} does not generate a secret key here; use "
            "CKM_AES_KEY_GEN or CKM_GENERIC_SECRET_KEY_GEN",
        )
    attrs_ = new_object(given, CKO.SECRET_KEY, key_type, mechanism, extra={CKA.VALUE_LEN: size})
    return NewKey(attrs_, bytearray(secrets.token_bytes(size)))


def generate_pair(mechanism: int, public: Attrs, private: Attrs) -> tuple[Attrs, NewKey]:
    """CKM_EC_KEY_PAIR_GEN (P-256) or CKM_EC_EDWARDS_KEY_PAIR_GEN (Ed25519)."""
    params = public.get(CKA.EC_PARAMS, private.get(CKA.EC_PARAMS))
    if mechanism == CKM.EC_KEY_PAIR_GEN:
        if params is None:
            raise Pkcs11Error(
                CKR.TEMPLATE_INCOMPLETE,
                "CKM_EC_KEY_PAIR_GEN needs CKA_EC_PARAMS in the public template "
                "(prime256v1, e.g. pkcs11-tool --key-type EC:prime256v1)",
            )
        if params != P256_OID:
            raise Pkcs11Error(
                CKR.CURVE_NOT_SUPPORTED,
                "this HSM makes EC keys on P-256 only (CKA_EC_PARAMS = the OID of prime256v1)",
            )
        key = ec.generate_private_key(ec.SECP256R1())
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        value = bytearray(key.private_numbers().private_value.to_bytes(32, "big"))
        key_type = CKK.EC
    elif mechanism == CKM.EC_EDWARDS_KEY_PAIR_GEN:
        params = ED25519_OID if params is None else params
        if params not in (ED25519_OID, ED25519_NAME):
            raise Pkcs11Error(
                CKR.CURVE_NOT_SUPPORTED,
                "this HSM makes Edwards keys on Ed25519 only (CKA_EC_PARAMS = id-Ed25519 "
                "or the string edwards25519)",
            )
        ed = ed25519.Ed25519PrivateKey.generate()
        point = ed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        value = bytearray(
            ed.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
        key_type = CKK.EC_EDWARDS
    else:
        raise Pkcs11Error(
            CKR.MECHANISM_INVALID,
            f"{name_of(CKM, mechanism)} does not generate a key pair here; use "
            "CKM_EC_KEY_PAIR_GEN or CKM_EC_EDWARDS_KEY_PAIR_GEN",
        )
    public_attrs = new_object(
        public, CKO.PUBLIC_KEY, key_type, mechanism,
        extra={CKA.EC_PARAMS: params, CKA.EC_POINT: octet_string(point)},
    )  # fmt: skip
    private_attrs = new_object(private, CKO.PRIVATE_KEY, key_type, mechanism,
                               extra={CKA.EC_PARAMS: params})  # fmt: skip
    return public_attrs, NewKey(private_attrs, value)
