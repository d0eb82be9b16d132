"""The mechanisms a partition serves: their list, and sign, verify, encrypt, decrypt with a key.

Each operation takes the key's attributes (checked here: key type against mechanism, the
usage flag CKA_SIGN, CKA_VERIFY, CKA_ENCRYPT or CKA_DECRYPT) and the key value (for a
public key, its CKA_EC_POINT).  Signatures are PKCS#11's: ECDSA is r || s (64 bytes for
P-256), not DER; CKM_ECDSA signs the digest the application made.  AES-GCM takes the IV
from the application (a fresh one per message is the caller's duty, as PKCS#11 says) and
appends a 128-bit tag; a wrong tag is CKR_ENCRYPTED_DATA_INVALID.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsm.token.keygen import unwrap_octet_string
from hsm.token.template import label_of
from ped.pkcs11.constants import CKA, CKF_MECH, CKK, CKM, CKO, CKR, name_of
from ped.pkcs11.token import AttrValue, GcmParams, Mechanism, MechanismInfo, Pkcs11Error

#: The largest input of one operation (what one request carries).
MAX_DATA = 64 * 1024
MAX_IV = 128

_EC = CKF_MECH.EC_F_P | CKF_MECH.EC_NAMEDCURVE | CKF_MECH.EC_UNCOMPRESS
MECHANISMS: tuple[MechanismInfo, ...] = (
    MechanismInfo(CKM.AES_KEY_GEN, 16, 32, CKF_MECH.HW | CKF_MECH.GENERATE),
    MechanismInfo(CKM.AES_GCM, 16, 32, CKF_MECH.HW | CKF_MECH.ENCRYPT | CKF_MECH.DECRYPT),
    MechanismInfo(CKM.GENERIC_SECRET_KEY_GEN, 1, 256, CKF_MECH.HW | CKF_MECH.GENERATE),
    MechanismInfo(CKM.SHA256_HMAC, 1, 256, CKF_MECH.HW | CKF_MECH.SIGN | CKF_MECH.VERIFY),
    MechanismInfo(CKM.EC_KEY_PAIR_GEN, 256, 256, CKF_MECH.HW | CKF_MECH.GENERATE_KEY_PAIR | _EC),
    MechanismInfo(CKM.ECDSA, 256, 256, CKF_MECH.HW | CKF_MECH.SIGN | CKF_MECH.VERIFY | _EC),
    MechanismInfo(CKM.ECDSA_SHA256, 256, 256,
                  CKF_MECH.HW | CKF_MECH.SIGN | CKF_MECH.VERIFY | _EC),
    MechanismInfo(CKM.EC_EDWARDS_KEY_PAIR_GEN, 255, 255,
                  CKF_MECH.HW | CKF_MECH.GENERATE_KEY_PAIR),
    MechanismInfo(CKM.EDDSA, 255, 255, CKF_MECH.HW | CKF_MECH.SIGN | CKF_MECH.VERIFY),
)  # fmt: skip

#: mechanism -> the key type it works with
_KEY_TYPE: dict[int, int] = {
    CKM.ECDSA: CKK.EC, CKM.ECDSA_SHA256: CKK.EC, CKM.EDDSA: CKK.EC_EDWARDS,
    CKM.AES_GCM: CKK.AES, CKM.SHA256_HMAC: CKK.GENERIC_SECRET,
}  # fmt: skip
#: a prehashed digest's length -> its hash (CKM_ECDSA signs what the application hashed)
_DIGESTS: dict[int, hashes.HashAlgorithm] = {
    28: hashes.SHA224(), 32: hashes.SHA256(), 48: hashes.SHA384(),
    64: hashes.SHA512(),
}  # fmt: skip

Attrs = Mapping[int, AttrValue]


def check_use(attrs: Attrs, mechanism: Mechanism, usage: int, data: bytes) -> None:
    """Refuse a mechanism the key cannot do, or a use its attributes forbid."""
    mech = mechanism.mechanism
    wanted = _KEY_TYPE.get(mech)
    if wanted is None:
        raise Pkcs11Error(
            CKR.MECHANISM_INVALID,
            f"{name_of(CKM, mech)} is not a mechanism of this HSM for this operation; "
            "C_GetMechanismList lists them",
        )
    if attrs.get(CKA.KEY_TYPE) != wanted:
        raise Pkcs11Error(
            CKR.KEY_TYPE_INCONSISTENT,
            f"{name_of(CKM, mech)} needs a {name_of(CKK, wanted)} key; key "
            f"{label_of(attrs)!r} is {name_of(CKK, int(attrs.get(CKA.KEY_TYPE, -1)))}",
        )
    if attrs.get(usage) is not True:
        raise Pkcs11Error(
            CKR.KEY_FUNCTION_NOT_PERMITTED,
            f"key {label_of(attrs)!r} has {name_of(CKA, usage)} false; generate a key with "
            f"{name_of(CKA, usage)} true for this use",
        )
    if len(data) > MAX_DATA:
        raise Pkcs11Error(
            CKR.DATA_LEN_RANGE, f"one operation takes at most {MAX_DATA} bytes of data"
        )
    if mech != CKM.AES_GCM and mechanism.parameter not in (None, b""):
        raise Pkcs11Error(
            CKR.MECHANISM_PARAM_INVALID, f"{name_of(CKM, mech)} takes no parameter here"
        )


def sign(attrs: Attrs, value: bytes | bytearray, mechanism: Mechanism, data: bytes) -> bytes:
    check_use(attrs, mechanism, CKA.SIGN, data)
    mech = mechanism.mechanism
    if mech == CKM.SHA256_HMAC:
        return hmac.new(bytes(value), data, hashlib.sha256).digest()
    if mech == CKM.EDDSA:
        return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(value)).sign(data)
    key = ec.derive_private_key(int.from_bytes(value, "big"), ec.SECP256R1())
    der = key.sign(data, _ecdsa(mech, data))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(attrs: Attrs, value: bytes | bytearray, mechanism: Mechanism, data: bytes,
           signature: bytes) -> None:  # fmt: skip
    """*value*: the secret (HMAC) or nothing (public keys use their CKA_EC_POINT)."""
    check_use(attrs, mechanism, CKA.VERIFY, data)
    mech = mechanism.mechanism
    if mech == CKM.SHA256_HMAC:
        if len(signature) != 32:
            raise Pkcs11Error(CKR.SIGNATURE_LEN_RANGE, "an HMAC-SHA256 signature has 32 bytes")
        if not hmac.compare_digest(hmac.new(bytes(value), data, hashlib.sha256).digest(),
                                   signature):  # fmt: skip
            raise Pkcs11Error(CKR.SIGNATURE_INVALID, "the HMAC does not match")
        return
    if attrs.get(CKA.CLASS) != CKO.PUBLIC_KEY:
        raise Pkcs11Error(
            CKR.KEY_TYPE_INCONSISTENT, "verify with the public key of the pair (CKO_PUBLIC_KEY)"
        )
    point = attrs.get(CKA.EC_POINT)
    assert isinstance(point, bytes)
    raw = unwrap_octet_string(point)
    try:
        if mech == CKM.EDDSA:
            if len(signature) != 64:
                raise Pkcs11Error(CKR.SIGNATURE_LEN_RANGE, "an Ed25519 signature has 64 bytes")
            ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
            return
        if len(signature) != 64:
            raise Pkcs11Error(
                CKR.SIGNATURE_LEN_RANGE, "a P-256 ECDSA signature has 64 bytes (r || s)"
            )
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        public.verify(der, data, _ecdsa(mech, data))
    except InvalidSignature:
        raise Pkcs11Error(CKR.SIGNATURE_INVALID, "the signature does not verify") from None


def _ecdsa(mech: int, data: bytes) -> ec.ECDSA:
    if mech == CKM.ECDSA_SHA256:
        return ec.ECDSA(hashes.SHA256())
    digest = _DIGESTS.get(len(data))
    if digest is None:
        raise Pkcs11Error(
            CKR.DATA_LEN_RANGE,
            "CKM_ECDSA signs a digest of 28, 32, 48 or 64 bytes (hash first, or use "
            "CKM_ECDSA_SHA256)",
        )
    return ec.ECDSA(Prehashed(digest))


def _gcm(mechanism: Mechanism) -> GcmParams:
    params = mechanism.parameter
    if not isinstance(params, GcmParams):
        raise Pkcs11Error(
            CKR.MECHANISM_PARAM_INVALID, "CKM_AES_GCM needs CK_GCM_PARAMS (IV, AAD, tag bits)"
        )
    if params.tag_bits != 128:
        raise Pkcs11Error(
            CKR.MECHANISM_PARAM_INVALID, "this HSM uses 128-bit AES-GCM tags (ulTagBits = 128)"
        )
    if not 8 <= len(params.iv) <= MAX_IV:
        raise Pkcs11Error(
            CKR.MECHANISM_PARAM_INVALID,
            f"an AES-GCM IV has 8-{MAX_IV} bytes (12 recommended, fresh for every message)",
        )
    if len(params.aad) > MAX_DATA:
        raise Pkcs11Error(
            CKR.MECHANISM_PARAM_INVALID, f"AES-GCM additional data is at most {MAX_DATA} bytes"
        )
    return params


def encrypt(attrs: Attrs, value: bytes | bytearray, mechanism: Mechanism, data: bytes) -> bytes:
    check_use(attrs, mechanism, CKA.ENCRYPT, data)
    params = _gcm(mechanism)
    return AESGCM(bytes(value)).encrypt(params.iv, data, params.aad or None)


def decrypt(attrs: Attrs, value: bytes | bytearray, mechanism: Mechanism, data: bytes) -> bytes:
    check_use(attrs, mechanism, CKA.DECRYPT, data)
    params = _gcm(mechanism)
    if len(data) < 16:
        raise Pkcs11Error(
            CKR.ENCRYPTED_DATA_LEN_RANGE, "AES-GCM ciphertext ends with a 16-byte tag"
        )
    try:
        return AESGCM(bytes(value)).decrypt(params.iv, data, params.aad or None)
    except InvalidTag:
        raise Pkcs11Error(
            CKR.ENCRYPTED_DATA_INVALID,
            "the AES-GCM tag does not match (wrong key, IV, additional data, or altered data)",
        ) from None
