"""Real PKCS#11 clients through Debian's p11-kit-client.so against `serve_p11kit` over a
SoftBackend (a server process): pkcs11-tool (opensc) and PyKCS11, as an application would."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from tests.hsmclient.conftest import PIN, SoftServer

pytestmark = pytest.mark.process


def test_pkcs11_tool_lists_the_slots(soft_server: SoftServer) -> None:
    listing = soft_server.tool_run("-L").stdout
    assert "Slot 0 (0x0): soft token app (serial 1001)" in listing
    assert "token label        : second" in listing
    assert "login required" in listing


def test_pkcs11_tool_generates_signs_verifies_and_lists(
    soft_server: SoftServer, tmp_path: Path
) -> None:
    login = ("--login", "--pin", PIN)
    made = soft_server.tool_run(
        *login, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "app-key"
    ).stdout
    assert "Key pair generated" in made and "never extractable" in made
    data = b"an application's document"
    digest = tmp_path / "digest"
    digest.write_bytes(hashlib.sha256(data).digest())  # raw ECDSA: the application hashes
    signature = tmp_path / "signature"
    soft_server.tool_run(*login, "--sign", "-m", "ECDSA", "--label", "app-key",
                         "-i", str(digest), "-o", str(signature))  # fmt: skip
    raw = signature.read_bytes()
    assert len(raw) == 64
    verified = soft_server.tool_run(
        *login, "--verify", "-m", "ECDSA", "--label", "app-key",
        "-i", str(digest), "--signature-file", str(signature),
    )  # fmt: skip
    assert "Signature is valid" in verified.stdout
    # and the signature is a real ECDSA one, checked outside PKCS#11
    public_der = tmp_path / "public.der"
    soft_server.tool_run("--read-object", "--type", "pubkey", "--label", "app-key",
                         "-o", str(public_der))  # fmt: skip
    public = serialization.load_der_public_key(public_der.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    der = utils.encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    public.verify(der, data, ec.ECDSA(hashes.SHA256()))
    listed = soft_server.tool_run(*login, "--list-objects").stdout
    assert listed.count("label:      app-key") == 2  # the public and the private key
    assert "Private Key Object; EC" in listed
    wrong = soft_server.tool_run("--login", "--pin", "not-the-pin", "--list-objects", check=False)
    assert wrong.returncode != 0 and "CKR_PIN_INCORRECT" in wrong.stderr
    assert PIN not in soft_server.log.read_text()


def test_pkcs11_tool_hmac_through_p11kit(soft_server: SoftServer, tmp_path: Path) -> None:
    login = ("--login", "--pin", PIN)
    refused = soft_server.tool_run(*login, "--keygen", "--key-type", "GENERIC:32",
                                   "--label", "mac-key", check=False)  # fmt: skip
    assert "CKR_TEMPLATE_INCONSISTENT" in refused.stderr  # secret keys are sensitive: say so
    soft_server.tool_run(*login, "--keygen", "--key-type", "GENERIC:32", "--label", "mac-key",
                         "--sensitive")  # fmt: skip
    data = tmp_path / "data"
    data.write_bytes(b"x" * 1000)
    mac = tmp_path / "mac"
    soft_server.tool_run(*login, "--sign", "-m", "SHA256-HMAC", "--label", "mac-key",
                         "-i", str(data), "-o", str(mac))  # fmt: skip
    assert len(mac.read_bytes()) == 32
    verified = soft_server.tool_run(*login, "--verify", "-m", "SHA256-HMAC", "--label", "mac-key",
                                    "-i", str(data), "--signature-file", str(mac))  # fmt: skip
    assert "Signature is valid" in verified.stdout


@pytest.mark.parametrize("count", [0, 32])
def test_pkcs11_tool_random(soft_server: SoftServer, count: int) -> None:
    result = subprocess.run(
        [soft_server.tool, "--module", str(soft_server.module), "--generate-random", str(count)],
        env=soft_server.env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == count


def test_pkcs11_tool_self_test_has_no_errors(soft_server: SoftServer) -> None:
    soft_server.tool_run("--login", "--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1",
                         "--label", "test-key")  # fmt: skip
    result = soft_server.tool_run("--login", "--pin", PIN, "--test")
    assert "No errors" in result.stdout, result.stdout + result.stderr
    assert "C_GenerateRandom(buf1,0) failed" not in result.stdout + result.stderr


_PYKCS11 = """
import hashlib, json, sys
import PyKCS11

lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
pin = sys.argv[2]
out = {}
slots = lib.getSlotList(tokenPresent=True)
out["labels"] = [lib.getTokenInfo(s).label.strip() for s in slots]
session = lib.openSession(slots[0], PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
session.login(pin)
try:
    session.login(pin)
except PyKCS11.PyKCS11Error as exc:
    out["second_login"] = exc.value
other = lib.openSession(slots[0], PyKCS11.CKF_SERIAL_SESSION)
out["other_session_state"] = other.getSessionInfo().state
p256 = bytes.fromhex("06082a8648ce3d030107")
ecdsa = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA)
pub, priv = session.generateKeyPair(
    [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
     (PyKCS11.CKA_EC_PARAMS, p256), (PyKCS11.CKA_VERIFY, True), (PyKCS11.CKA_TOKEN, True),
     (PyKCS11.CKA_LABEL, "py-key"), (PyKCS11.CKA_ID, b"\\x42")],
    [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
     (PyKCS11.CKA_SIGN, True), (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_SENSITIVE, True),
     (PyKCS11.CKA_PRIVATE, True), (PyKCS11.CKA_LABEL, "py-key"), (PyKCS11.CKA_ID, b"\\x42")],
    mecha=PyKCS11.Mechanism(PyKCS11.CKM_EC_KEY_PAIR_GEN))
digest = hashlib.sha256(b"hello through p11-kit").digest()
sig = bytes(session.sign(priv, digest, ecdsa))
out["signature"] = sig.hex()
out["digest"] = digest.hex()
out["verified"] = session.verify(pub, digest, sig, ecdsa)
out["verified_other"] = session.verify(pub, hashlib.sha256(b"other").digest(), sig, ecdsa)
found = session.findObjects(
    [(PyKCS11.CKA_ID, b"\\x42"), (PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY)])
out["found"] = len(found)
label, key_id, cls, sensitive, extractable = session.getAttributeValue(found[0], [
    PyKCS11.CKA_LABEL, PyKCS11.CKA_ID, PyKCS11.CKA_CLASS, PyKCS11.CKA_SENSITIVE,
    PyKCS11.CKA_EXTRACTABLE])
out["attributes"] = [label, bytes(key_id).hex(), cls, bool(sensitive), bool(extractable)]
def read(handle, attribute):
    return session.getAttributeValue(handle, [attribute], allAsBinary=True)[0]
out["private_value"] = read(found[0], PyKCS11.CKA_VALUE)
out["ec_point"] = bytes(read(pub, PyKCS11.CKA_EC_POINT)).hex()
mac_key = session.generateKey([
    (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
    (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_GENERIC_SECRET),
    (PyKCS11.CKA_VALUE_LEN, 32), (PyKCS11.CKA_SIGN, True), (PyKCS11.CKA_VERIFY, True),
    (PyKCS11.CKA_SENSITIVE, True)], mecha=PyKCS11.Mechanism(PyKCS11.CKM_GENERIC_SECRET_KEY_GEN))
hmac = PyKCS11.Mechanism(PyKCS11.CKM_SHA256_HMAC)
mac = bytes(session.sign(mac_key, b"data", hmac))
out["mac_verified"] = session.verify(mac_key, b"data", mac, hmac)
aes = session.generateKey([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
    (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES), (PyKCS11.CKA_VALUE_LEN, 32),
    (PyKCS11.CKA_SENSITIVE, True)])
try:
    session.encrypt(aes, b"x" * 16, PyKCS11.AES_GCM_Mechanism(b"\\x00" * 12, b"", 128))
    out["gcm"] = "carried"
except PyKCS11.PyKCS11Error as exc:
    out["gcm"] = exc.value
out["random"] = len(bytes(session.generateRandom(16)))
session.destroyObject(mac_key)
out["after_destroy"] = len(session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY)]))
session.logout()
session.closeSession()
print(json.dumps(out))
"""


def test_pykcs11_logs_in_generates_signs_verifies_finds_and_reads(soft_server: SoftServer) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PYKCS11, str(soft_server.module), PIN],
        env=soft_server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + soft_server.log.read_text()
    out = json.loads(result.stdout)
    assert out["labels"] == ["app", "second"]
    assert out["second_login"] == 0x100  # CKR_USER_ALREADY_LOGGED_IN
    assert out["other_session_state"] == 1  # CKS_RO_USER_FUNCTIONS: login is per application
    assert out["verified"] is True and out["verified_other"] is False
    assert out["found"] == 1
    assert out["attributes"] == ["py-key", "42", 3, True, False]
    assert out["private_value"] is None  # CKR_ATTRIBUTE_SENSITIVE: never readable
    assert out["mac_verified"] is True
    assert out["gcm"] == 0x70  # CKR_MECHANISM_INVALID: p11-kit 0.24 cannot carry GCM parameters
    assert out["random"] == 16
    assert out["after_destroy"] == 1  # the AES key is left
    point = bytes.fromhex(out["ec_point"])
    assert point[:2] == b"\x04\x41"  # a DER OCTET STRING around the uncompressed point
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point[2:])
    signature = bytes.fromhex(out["signature"])
    der = utils.encode_dss_signature(int.from_bytes(signature[:32], "big"),
                                     int.from_bytes(signature[32:], "big"))  # fmt: skip
    public.verify(der, bytes.fromhex(out["digest"]), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
