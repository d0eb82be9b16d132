"""Sessions of the client path: read-only sessions, private objects, public keys without a
login, finding by template, and logins that the HSM side ends."""

from __future__ import annotations

import hashlib

import pytest

from hsm.token.keygen import P256_OID
from ped.pkcs11.constants import CKA, CKK, CKM, CKO, CKR, CKU
from ped.pkcs11.token import (
    CKS_RO_PUBLIC_SESSION,
    CKS_RW_USER_FUNCTIONS,
    Attribute,
    Mechanism,
    Pkcs11Error,
)
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, logged_in

PUB = [Attribute(CKA.TOKEN, True), Attribute(CKA.EC_PARAMS, P256_OID),
       Attribute(CKA.LABEL, b"k1"), Attribute(CKA.ID, b"\x01")]  # fmt: skip
PRIV = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"k1"), Attribute(CKA.ID, b"\x01")]


async def test_find_by_label_id_class_and_key_type(rig: Rig) -> None:
    access, s = await logged_in(rig)
    pub, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), PUB, PRIV)
    aes_template = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, b"a")]
    aes = await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), aes_template)
    assert await access.find_objects(s, [Attribute(CKA.ID, b"\x01")]) == [pub, priv]
    assert await access.find_objects(s, [Attribute(CKA.KEY_TYPE, CKK.AES)]) == [aes]
    assert await access.find_objects(
        s, [Attribute(CKA.CLASS, CKO.PUBLIC_KEY), Attribute(CKA.LABEL, b"k1")]
    ) == [pub]
    assert await access.find_objects(s, [Attribute(CKA.LABEL, b"none")]) == []
    (missing,) = await access.get_attributes(s, aes, [CKA.EC_POINT])
    assert missing.rv == CKR.ATTRIBUTE_TYPE_INVALID


async def test_without_a_login_only_public_objects_and_verification(rig: Rig) -> None:
    access, s = await logged_in(rig)
    pub, priv = await access.generate_key_pair(s, Mechanism(CKM.EC_KEY_PAIR_GEN), PUB, PRIV)
    digest = hashlib.sha256(b"m").digest()
    sig = await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    await access.logout(s)
    assert access.session_state(s) == CKS_RO_PUBLIC_SESSION + 2  # type: ignore[attr-defined]
    assert await access.find_objects(s, []) == [pub]
    await access.verify(s, Mechanism(CKM.ECDSA), pub, digest, sig)
    with pytest.raises(Pkcs11Error) as refused:
        await access.sign(s, Mechanism(CKM.ECDSA), priv, digest)
    assert refused.value.rv == CKR.KEY_HANDLE_INVALID
    # one return value's name in the text, the one the application sees
    assert str(refused.value).startswith("CKR_KEY_HANDLE_INVALID: object ")
    assert "OBJECT_HANDLE_INVALID" not in str(refused.value)
    with pytest.raises(Pkcs11Error) as refused:
        await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [])
    assert refused.value.rv == CKR.USER_NOT_LOGGED_IN
    with pytest.raises(Pkcs11Error) as refused:
        await access.logout(s)
    assert refused.value.rv == CKR.USER_NOT_LOGGED_IN


async def test_a_read_only_session_makes_no_token_objects(rig: Rig) -> None:
    access, _ = await logged_in(rig)
    ro = await access.open_session(access.partitions()[0].serial, False)
    with pytest.raises(Pkcs11Error) as refused:
        await access.generate_key(ro, Mechanism(CKM.AES_KEY_GEN), [Attribute(CKA.TOKEN, True)])
    assert refused.value.rv == CKR.SESSION_READ_ONLY
    await access.generate_key(ro, Mechanism(CKM.AES_KEY_GEN), [])  # a session object is fine


async def test_the_login_covers_every_session_of_the_connection(rig: Rig) -> None:
    access, s = await logged_in(rig)
    s2 = await access.open_session(access.partitions()[0].serial, True)
    assert access.session_state(s2) == CKS_RW_USER_FUNCTIONS  # type: ignore[attr-defined]
    await access.generate_key(s2, Mechanism(CKM.AES_KEY_GEN), [])
    # another connection of the same client is not logged in
    other = rig.hsm.client_access(CLIENT)
    s3 = await other.open_session(other.partitions()[0].serial, True)
    with pytest.raises(Pkcs11Error) as refused:
        await other.generate_key(s3, Mechanism(CKM.AES_KEY_GEN), [])
    assert refused.value.rv == CKR.USER_NOT_LOGGED_IN
    # closing the last session of the partition logs out
    await access.close_session(s)
    await access.close_session(s2)
    s4 = await access.open_session(access.partitions()[0].serial, True)
    with pytest.raises(Pkcs11Error):
        await access.generate_key(s4, Mechanism(CKM.AES_KEY_GEN), [])


async def test_a_lockout_on_the_hsm_ends_the_clients_login(rig: Rig) -> None:
    access, s = await logged_in(rig)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.hsm.partitions.changepolicy("p1", 20, 1)
    rig.hsm.roles.logout(None)
    rig.ped.plan.append(("pin", "p1-co"))  # one wrong PED PIN on the shell locks
    with pytest.raises(Exception, match="locked"):
        await rig.hsm.roles.login(rig.notify, "p1", "co", None)
    with pytest.raises(Pkcs11Error) as refused:
        await access.generate_key(s, Mechanism(CKM.AES_KEY_GEN), [])
    assert refused.value.rv == CKR.USER_NOT_LOGGED_IN
    with pytest.raises(Pkcs11Error) as locked:
        await access.login(s, CKU.USER, bytearray(CHAL))
    assert locked.value.rv == CKR.PIN_LOCKED


async def test_bad_handles_and_calls(rig: Rig) -> None:
    access, s = await logged_in(rig)
    with pytest.raises(Pkcs11Error) as bad:
        await access.sign(s, Mechanism(CKM.ECDSA), 424242, bytes(32))
    assert bad.value.rv == CKR.KEY_HANDLE_INVALID
    with pytest.raises(Pkcs11Error) as bad:
        await access.generate_random(s, 10**7)
    assert bad.value.rv == CKR.ARGUMENTS_BAD
    with pytest.raises(Pkcs11Error) as bad:
        await access.generate_key(s, Mechanism(CKM.ECDSA), [])
    assert bad.value.rv == CKR.MECHANISM_INVALID
    with pytest.raises(Pkcs11Error) as bad:
        await access.login(999, CKU.USER, bytearray(CHAL))
    assert bad.value.rv == CKR.SESSION_HANDLE_INVALID
    mechs = await access.mechanisms(access.partitions()[0].serial)
    assert {m.mechanism for m in mechs} >= {CKM.ECDSA, CKM.AES_GCM, CKM.EDDSA}


async def test_the_pin_buffer_is_wiped(rig: Rig) -> None:
    await logged_in(rig)
    other = rig.hsm.client_access(CLIENT)
    s = await other.open_session(other.partitions()[0].serial, True)
    pin = bytearray(CHAL)
    await other.login(s, CKU.USER, pin)
    assert pin == bytearray(len(CHAL))
    bad = bytearray(b"not it")
    with pytest.raises(Pkcs11Error):
        await other.login(s, CKU.USER, bad)
    assert bad == bytearray(6)
    assert "app1" in repr(other) and CHAL.decode() not in repr(other)
