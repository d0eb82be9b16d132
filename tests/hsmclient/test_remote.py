"""hsmclient's RemoteBackend against a real pedhsm NTLS listener (in process, real TLS)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import hsm.ntlsd
from ped.ntls.connection import choose_version
from ped.pkcs11.constants import CKA, CKM, CKO, CKR, CKU
from ped.pkcs11.token import Attribute, GcmParams, Mechanism, Pkcs11Error
from tests.ntls.fake_access import CHALLENGE, P256_OID, Partition
from tests.ntls.rig import ntls_rig


async def test_open_login_sign_verify_round_trip(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path) as rig:
        backend = rig.backend()
        app = await backend.connect()
        slots = await app.slots()
        assert [s.token_present for s in slots] == [True]
        slot = slots[0].slot_id
        info = await app.token_info(slot)
        assert (info.label, info.serial) == ("app", "1500010001")
        session = await app.open_session(slot, True)
        await app.login(session, CKU.USER, bytearray(CHALLENGE))
        pub, priv = await app.generate_key_pair(
            session,
            Mechanism(CKM.EC_KEY_PAIR_GEN),
            [Attribute(CKA.EC_PARAMS, P256_OID), Attribute(CKA.LABEL, b"app-key")],
            [Attribute(CKA.SIGN, True), Attribute(CKA.LABEL, b"app-key")],
        )
        signature = await app.sign(session, Mechanism(CKM.ECDSA_SHA256), priv, b"hello")
        await app.verify(session, Mechanism(CKM.ECDSA_SHA256), pub, b"hello", signature)
        (point,) = await app.get_attributes(session, pub, [CKA.EC_POINT])
        assert isinstance(point.value, bytes)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point.value)
        public.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
        found = await app.find_objects(
            session, [Attribute(CKA.LABEL, b"app-key"), Attribute(CKA.CLASS, CKO.PRIVATE_KEY)]
        )
        assert list(found) == [priv]
        (value,) = await app.get_attributes(session, priv, [CKA.VALUE])
        assert value.rv == CKR.ATTRIBUTE_SENSITIVE and value.value is None
        with pytest.raises(Pkcs11Error) as bad:
            await app.verify(session, Mechanism(CKM.ECDSA_SHA256), pub, b"other", signature)
        assert bad.value.rv == CKR.SIGNATURE_INVALID
        aes = await app.generate_key(session, Mechanism(CKM.AES_KEY_GEN), [])
        gcm = Mechanism(CKM.AES_GCM, GcmParams(b"\x01" * 12, b"header"))
        sealed = await app.encrypt(session, gcm, aes, b"plaintext")
        assert await app.decrypt(session, gcm, aes, sealed) == b"plaintext"
        assert len(await app.generate_random(session, 32)) == 32
        await app.close_session(session)
        await app.close()
        rows = await backend.slot_rows()
        assert [(r.server, r.serial, r.label, r.state) for r in rows] == [
            ("hsm1", "1500010001", "app", "ready")
        ]
        await backend.aclose()


async def test_auto_activation_is_known_from_a_version_2_pedhsm_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = {"app1": [Partition("1500010001", "app", auto_activation=True),
                      Partition("1500010002", "web")]}  # fmt: skip
    async with ntls_rig(tmp_path, parts) as rig:
        backend = rig.backend()
        rows = await backend.slot_rows()
        assert [(r.serial, r.auto_activation) for r in rows] == [
            ("1500010001", True), ("1500010002", False)]  # fmt: skip
        listed = await backend.listed("hsm1")
        assert listed["1500010001"].auto_activation is True
        monkeypatch.setattr(hsm.ntlsd, "choose_version",
                            lambda hello: choose_version(attrs.evolve(hello, version_max=1)))
        rows = await backend.slot_rows()  # a version-1 pedhsm cannot say
        assert [(r.serial, r.state, r.auto_activation) for r in rows] == [
            ("1500010001", "ready", None), ("1500010002", "ready", None)]  # fmt: skip
        assert {s: p.auto_activation for s, p in (await backend.listed("hsm1")).items()} == {
            "1500010001": None, "1500010002": None}  # fmt: skip
        await backend.aclose()


async def test_wrong_challenge_is_pin_incorrect(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path) as rig:
        app = await rig.backend().connect()
        slot = (await app.slots())[0].slot_id
        session = await app.open_session(slot, False)
        pin = bytearray(b"wrong")
        with pytest.raises(Pkcs11Error) as exc:
            await app.login(session, CKU.USER, pin)
        assert exc.value.rv == CKR.PIN_INCORRECT
        assert pin == bytearray(5)  # wiped
        assert rig.partitions["app1"][0].failures == 1
        await app.close()


async def test_unreachable_server_token_not_present(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path, server_port=1) as rig:
        backend = rig.backend()
        backend.slot_map.slot_for("hsm1", "1500010001")  # seen before
        app = await backend.connect()
        slots = await app.slots()
        assert [s.token_present for s in slots] == [False]
        with pytest.raises(Pkcs11Error) as exc:
            await app.open_session(slots[0].slot_id, True)
        assert exc.value.rv == CKR.TOKEN_NOT_PRESENT
        rows = await backend.slot_rows()
        assert rows[0].state.startswith("server unreachable: cannot connect to 127.0.0.1:1")
        await app.close()


async def test_client_sees_only_its_partitions(tmp_path: Path) -> None:
    parts = {"app1": [Partition("1500010001", "mine")], "other": [Partition("1500010002", "x")]}
    async with ntls_rig(tmp_path, parts) as rig:
        app = await rig.backend().connect()
        slots = await app.slots()
        assert [s.description for s in slots] == ["hsm1 partition mine (serial 1500010001)"]
        await app.close()


async def test_dropped_connection_device_removed_then_session_invalid(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path) as rig:
        app = await rig.backend().connect()
        slot = (await app.slots())[0].slot_id
        session = await app.open_session(slot, True)
        # pedhsm goes away under the application: its connections end.
        for conn in list(rig.listener.connections):
            conn.scope.cancel()
        with pytest.raises(Pkcs11Error) as first:
            await app.generate_random(session, 8)
        assert first.value.rv in (CKR.DEVICE_REMOVED, CKR.SESSION_HANDLE_INVALID)
        with pytest.raises(Pkcs11Error) as later:
            await app.generate_random(session, 8)
        assert later.value.rv == CKR.SESSION_HANDLE_INVALID
        # The next session dials again.
        session = await app.open_session(slot, True)
        assert len(await app.generate_random(session, 8)) == 8
        await app.close()
