"""Keys of the client path: generation, attributes, use, and what is refused."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hsm.token.keygen import P256_OID
from ped.pkcs11.constants import CKA, CKK, CKM, CKO, CKR, CKU
from ped.pkcs11.token import Attribute, GcmParams, Mechanism, Pkcs11Error
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import logged_in

EC_PUB = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"app-key"),
          Attribute(CKA.EC_PARAMS, P256_OID), Attribute(CKA.VERIFY, True)]  # fmt: skip
EC_PRIV = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"app-key"),
           Attribute(CKA.SIGN, True), Attribute(CKA.SENSITIVE, True)]  # fmt: skip


async def test_ec_p256_pair_signs_and_verifies(rig: Rig) -> None:
    access, s = await logged_in(rig)
    pub, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
    digest = hashlib.sha256(b"hello").digest()
    sig = await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    assert len(sig) == 64
    await access.verify(s, Mechanism(CKM.ECDSA), pub, digest, sig)
    # the public point verifies outside the HSM too (the form pkcs11-tool reads)
    (point,) = await access.get_attributes(s, pub, [CKA.EC_POINT])
    assert isinstance(point.value, bytes) and point.value[:3] == b"\x04\x41\x04"
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point.value[2:])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, b"hello", ec.ECDSA(hashes.SHA256()))
    sig2 = await access.sign(s, Mechanism(CKM.ECDSA_SHA256), priv, b"hello")
    await access.verify(s, Mechanism(CKM.ECDSA_SHA256), pub, b"hello", sig2)
    with pytest.raises(Pkcs11Error) as bad:
        await access.verify(s, Mechanism(CKM.ECDSA), pub, digest, bytes(64))
    assert bad.value.rv == CKR.SIGNATURE_INVALID
    found = await access.find_objects(s, [Attribute(CKA.LABEL, b"app-key")])
    assert set(found) == {pub, priv}
    found = await access.find_objects(s, [Attribute(CKA.CLASS, CKO.PRIVATE_KEY)])
    assert found == [priv]


async def test_private_and_secret_values_are_never_readable(rig: Rig) -> None:
    access, s = await logged_in(rig)
    _, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, EC_PRIV)
    aes = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.VALUE_LEN, 32)])
    for handle in (priv, aes):
        value, sens, extr = await access.get_attributes(
            s, handle, [CKA.VALUE, CKA.SENSITIVE, CKA.EXTRACTABLE]
        )
        assert value.rv == CKR.ATTRIBUTE_SENSITIVE and value.value is None
        assert sens.value is True and extr.value is False


async def test_extractable_or_non_sensitive_templates_are_refused(rig: Rig) -> None:
    access, s = await logged_in(rig)
    for attr in (Attribute(CKA.EXTRACTABLE, True), Attribute(CKA.SENSITIVE, False)):
        with pytest.raises(Pkcs11Error) as refused:
            await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [attr])
        assert refused.value.rv == CKR.TEMPLATE_INCONSISTENT
        assert "never extractable" in str(refused.value) or "always sensitive" in str(
            refused.value
        )


async def test_ed25519_signs_and_verifies(rig: Rig) -> None:
    access, s = await logged_in(rig)
    pub, priv = await access.generate_key_pair(
        s, Mechanism(CKM.EC_EDWARDS_KEY_PAIR_GEN), [Attribute(CKA.VERIFY, True)],
        [Attribute(CKA.SIGN, True)],
    )  # fmt: skip
    sig = await access.sign(s, Mechanism(CKM.EDDSA), priv, b"message")
    await access.verify(s, Mechanism(CKM.EDDSA), pub, b"message", sig)
    (kt,) = await access.get_attributes(s, priv, [CKA.KEY_TYPE])
    assert kt.value == CKK.EC_EDWARDS


async def test_aes_gcm_round_trip_and_wrong_tag(rig: Rig) -> None:
    access, s = await logged_in(rig)
    key = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.VALUE_LEN, 32)])
    gcm = Mechanism(CKM.AES_GCM, GcmParams(iv=secrets.token_bytes(12), aad=b"hdr"))
    ct = await access.encrypt(s, gcm, key, b"plain text")
    assert len(ct) == len(b"plain text") + 16
    assert await access.decrypt(s, gcm, key, ct) == b"plain text"
    with pytest.raises(Pkcs11Error) as bad:
        await access.decrypt(s, gcm, key, ct[:-1] + bytes([ct[-1] ^ 1]))
    assert bad.value.rv == CKR.ENCRYPTED_DATA_INVALID
    with pytest.raises(Pkcs11Error) as bad:
        await access.encrypt(s, Mechanism(CKM.AES_GCM, GcmParams(iv=bytes(12), tag_bits=96)),
                             key, b"x")  # fmt: skip
    assert bad.value.rv == CKR.MECHANISM_PARAM_INVALID


async def test_hmac_sha256_sign_verify(rig: Rig) -> None:
    access, s = await logged_in(rig)
    key = await access.generate_key(s, Mechanism(CKM.GENERIC_SECRET_KEY_GEN),
                                    [Attribute(CKA.VALUE_LEN, 32)])  # fmt: skip
    mac = await access.sign(s, Mechanism(CKM.SHA256_HMAC), key, b"data")
    await access.verify(s, Mechanism(CKM.SHA256_HMAC), key, b"data", mac)
    with pytest.raises(Pkcs11Error) as bad:
        await access.verify(s, Mechanism(CKM.SHA256_HMAC), key, b"other", mac)
    assert bad.value.rv == CKR.SIGNATURE_INVALID


async def test_usage_attributes_are_enforced(rig: Rig) -> None:
    access, s = await logged_in(rig)
    _, priv = await access.generate_key_pair(
        s, Mechanism(CKM.EC_KEY_PAIR_GEN), EC_PUB, [Attribute(CKA.SIGN, False)]
    )
    with pytest.raises(Pkcs11Error) as refused:
        await access.sign(s, Mechanism(CKM.ECDSA), priv, bytes(32))
    assert refused.value.rv == CKR.KEY_FUNCTION_NOT_PERMITTED
    aes = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [])
    with pytest.raises(Pkcs11Error) as refused:
        await access.sign(s, Mechanism(CKM.ECDSA), aes, bytes(32))
    assert refused.value.rv == CKR.KEY_TYPE_INCONSISTENT


async def test_oversized_and_bad_attributes_are_refused(rig: Rig) -> None:
    access, s = await logged_in(rig)
    for attr, rv in (
        (Attribute(CKA.LABEL, b"x" * 5000), CKR.ATTRIBUTE_VALUE_INVALID),
        (Attribute(CKA.LABEL, b"\xff\xfe"), CKR.ATTRIBUTE_VALUE_INVALID),
        (Attribute(CKA.SIGN, 1), CKR.ATTRIBUTE_VALUE_INVALID),
        (Attribute(0x8000_1234, b""), CKR.ATTRIBUTE_TYPE_INVALID),
        (Attribute(CKA.LOCAL, True), CKR.ATTRIBUTE_READ_ONLY),
    ):
        with pytest.raises(Pkcs11Error) as refused:
            await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [attr])
        assert refused.value.rv == rv, attr


async def test_destroy_and_session_objects(rig: Rig) -> None:
    access, s = await logged_in(rig)
    token = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.TOKEN, True)])
    session_key = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [])
    assert set(await access.find_objects(s, [])) == {token, session_key}
    await access.destroy_object(s, token)
    assert await access.find_objects(s, []) == [session_key]
    with pytest.raises(Pkcs11Error) as gone:
        await access.destroy_object(s, token)
    assert gone.value.rv == CKR.OBJECT_HANDLE_INVALID
    await access.close()
    # a new connection: the session object went with the old one
    again = rig.hsm.client_access("app1")
    s2 = await again.open_session(again.partitions()[0].serial, True)
    await again.login(s2, CKU.USER, bytearray(CHAL))
    assert await again.find_objects(s2, []) == []


async def test_random(rig: Rig) -> None:
    access, s = await logged_in(rig)
    assert await access.generate_random(s, 0) == b""
    assert len(await access.generate_random(s, 32)) == 32
