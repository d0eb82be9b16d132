"""The client listener over the real HSM (`Hsm.client_access`): hsmclient's RemoteBackend
opens a session, logs in with the challenge, makes an EC key pair, signs and verifies,
through real pinned TLS; a byte tap on the 1792 hop finds no challenge and no key."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from hsm.ntlsd import NtlsListener, ntls_identity
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.pkcs11.constants import CKA, CKM, CKR, CKU
from ped.pkcs11.token import Attribute, GcmParams, Mechanism, Pkcs11Error
from ped.tls import PinStore, ensure_identity
from pedtools.testing.secret_scan import find, forms
from pedtools.testing.tap import tcp_tap
from tests.hsm.rig import CHAL, Rig
from tests.hsm.test_clients_rig import CLIENT, activated

P256 = bytes.fromhex("06082a8648ce3d030107")


async def test_remote_backend_against_the_real_hsm(
    rig: Rig, tmp_path: Path, nursery: trio.Nursery
) -> None:
    await activated(rig, "p1")
    await activated(rig, "p2")
    client_home = tmp_path / "client"
    client_home.mkdir()
    client_id = ensure_identity(client_home, "app-host")
    rig.hsm.clients.register(CLIENT, client_id.certificate_pem, None)  # `client register`
    rig.hsm.clients.assign(CLIENT, "p1")  # `client assignpartition`
    lock = trio.Lock()
    listener = NtlsListener(rig.home, rig.hsm.serial, rig.hsm.client_access, lock,
                            port=0, host="127.0.0.1")  # fmt: skip
    bound = await nursery.start(listener.run)
    tap, tap_port = await tcp_tap(nursery, bound[0][1])
    pins = PinStore(client_home, program="hsmclient")
    pins.register("hsm1", ntls_identity(rig.home, rig.hsm.serial).certificate_pem,
                  ip="127.0.0.1", port=tap_port)  # fmt: skip
    backend = RemoteBackend(client_home, pins, SlotMap(client_home))
    app = await backend.connect()
    slots = await app.slots()
    assert len(slots) == 1 and slots[0].token_present  # p1 only: p2 is not assigned
    slot = slots[0].slot_id
    session = await app.open_session(slot, True)
    pin = bytearray(CHAL)
    await app.login(session, CKU.USER, pin)
    assert pin == bytearray(len(CHAL))
    pub, priv = await app.generate_key_pair(
        session,
        Mechanism(CKM.EC_KEY_PAIR_GEN),
        [Attribute(CKA.EC_PARAMS, P256), Attribute(CKA.TOKEN, True), Attribute(CKA.VERIFY, True)],
        [Attribute(CKA.TOKEN, True), Attribute(CKA.SIGN, True), Attribute(CKA.LABEL, b"app-key")],
    )
    signature = await app.sign(session, Mechanism(CKM.ECDSA_SHA256), priv, b"message")
    await app.verify(session, Mechanism(CKM.ECDSA_SHA256), pub, b"message", signature)
    (point,) = await app.get_attributes(session, pub, [CKA.EC_POINT])
    assert point.rv == CKR.OK and isinstance(point.value, bytes)
    (value,) = await app.get_attributes(session, priv, [CKA.VALUE])
    assert value.rv == CKR.ATTRIBUTE_SENSITIVE
    aes = await app.generate_key(
        session, Mechanism(CKM.AES_KEY_GEN),
        [Attribute(CKA.VALUE_LEN, 32), Attribute(CKA.ENCRYPT, True), Attribute(CKA.DECRYPT, True)],
    )  # fmt: skip
    gcm = Mechanism(CKM.AES_GCM, GcmParams(b"\x07" * 12, b"aad"))
    sealed = await app.encrypt(session, gcm, aes, b"secret data")
    assert await app.decrypt(session, gcm, aes, sealed) == b"secret data"
    with pytest.raises(Pkcs11Error) as wrong:
        other = await app.open_session(slot, False)
        await app.logout(session)
        await app.login(other, CKU.USER, bytearray(b"not the challenge"))
    assert wrong.value.rv == CKR.PIN_INCORRECT
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _raw_point(point.value))
    public.verify(_der_signature(signature), b"message", ec.ECDSA(hashes.SHA256()))
    await app.close()
    await backend.aclose()
    await tap.wait_ended()
    needles = {"challenge": forms(CHAL), "plaintext": {b"secret data"}}
    assert find(needles, {"up": tap.up, "down": tap.down}) == []
    assert tap.up and tap.down  # the tap saw the TLS records


def _raw_point(ec_point: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING around the uncompressed point."""
    return ec_point[2:] if ec_point[0] == 0x04 and len(ec_point) == 67 else ec_point


def _der_signature(raw: bytes) -> bytes:
    """PKCS#11's ECDSA signature is r || s; cryptography wants DER."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    half = len(raw) // 2
    return encode_dss_signature(int.from_bytes(raw[:half]), int.from_bytes(raw[half:]))
