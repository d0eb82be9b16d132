"""The client path end to end, with real programs: pkcs11-tool -> p11-kit -> hsmclient -> pedhsm.

Every part is a process started with its own commands (`pedtools.bench.clientpath_site`,
the commands README's section "The client path" shows): pedhsm with its cabled PED
emulated, the HSM initialised, a partition whose Crypto Officer has a black key and a
random challenge secret, activated with its black key (policy 22);
hsmclient registered with pedhsm and pedhsm with hsmclient, the partition assigned;
hsmclient serving p11-kit's socket.  The applications are Debian's: ``pkcs11-tool``
(opensc) loading ``p11-kit-client.so`` with ``P11_KIT_SERVER_ADDRESS``, and PyKCS11
(a second, independent PKCS#11 client, run as its own process) loading the same module.
A byte tap stands on the hsmclient -> pedhsm hop (port 1792's stand-in) and records
every byte of it; 300 idle mutual TLS connections (the registered client's certificate)
and 1,000 idle TCP connections stand on the listener while pkcs11-tool signs (the
listener's cap and eviction keep them from shutting a working client out).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from pedtools.bench.clientpath_site import P11KIT_CLIENT, PARTITION, ClientPathSite
from pedtools.demo.taps import TapThread
from pedtools.testing import Site
from pedtools.testing.secret_scan import find, secrets_of
from tests.hsmclient.conftest import require_p11_tools

pytestmark = pytest.mark.process

#: Idle connections held on the client port while pkcs11-tool signs (`_idle_connections`):
#: the issue's 1,000 that never start TLS, and 300 that finish a mutual TLS handshake with
#: the registered client's certificate and then say nothing (over pedhsm's default cap of
#: 256 connections: the listener evicts the quietest, so the working client gets in).
IDLE_TCP = 1000
IDLE_TLS = 300


class Path11:
    """A `ClientPathSite` with a byte tap in front of pedhsm's client listener."""

    def __init__(self, site: Site, taps: TapThread) -> None:
        self.cps = ClientPathSite(site)
        self.site = site
        self.taps = taps
        self.cps.up()
        self.tap_port = taps.tcp("hsmclient <-> pedhsm", self.cps.ntls_port)
        self.cps.register(server_port=self.tap_port)
        self.work = site.root

    def tool(self, *args: str, pin: str | None = None) -> subprocess.CompletedProcess[str]:
        """pkcs11-tool with p11-kit's client module, as an application host runs it."""
        login = ["--login", "--pin", pin] if pin is not None else []
        return subprocess.run(
            ["pkcs11-tool", "--module", str(P11KIT_CLIENT), *login, *args],
            env=self.cps.app_env(), cwd=self.work, capture_output=True, text=True,
            timeout=120, check=False,
        )

    def tool_ok(self, *args: str, pin: str | None = None) -> str:
        done = self.tool(*args, pin=pin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout + done.stderr

    def hsm_ok(self, *args: str) -> str:
        return self.cps.must(self.cps.hsm(*args))


@pytest.fixture
def path11() -> Iterator[Path11]:
    require_p11_tools()  # or a failure saying what to install (never a skip)
    taps = TapThread().start()
    site = Site(prefix="cp-")
    try:
        yield Path11(site, taps)
    finally:
        site.close()
        taps.close()


def _public_key(p: Path11, label: str) -> ec.EllipticCurvePublicKey:
    der = p.work / f"{label}.pub.der"
    p.tool_ok("--read-object", "--type", "pubkey", "--label", label, "--output-file", str(der))
    key = serialization.load_der_public_key(der.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_pkcs11_tool_and_pykcs11_through_the_real_path(path11: Path11) -> None:
    p, challenge = path11, path11.cps.challenge
    # the slot: one token, the partition assigned to this client, by its name
    listed = p.tool_ok("-L")
    assert "Available slots:" in listed and f"token label        : {PARTITION}" in listed, listed
    out = p.tool_ok("--keypairgen", "--key-type", "EC:prime256v1", "--label", "app-key",
                    pin=challenge)
    assert "Key pair generated" in out and "EC_POINT" in out, out
    # sign a SHA-256 digest (p11-kit carries raw ECDSA: the application hashes) and verify
    data = b"signed through pkcs11-tool, p11-kit, hsmclient and pedhsm\n"
    digest = p.work / "digest.bin"
    digest.write_bytes(hashlib.sha256(data).digest())
    sig = p.work / "sig.bin"
    p.tool_ok("--sign", "-m", "ECDSA", "--label", "app-key", "--input-file", str(digest),
              "--output-file", str(sig), pin=challenge)
    assert len(sig.read_bytes()) == 64  # r || s
    out = p.tool_ok("--verify", "-m", "ECDSA", "--label", "app-key", "--input-file",
                    str(digest), "--signature-file", str(sig), pin=challenge)
    assert "Signature is valid" in out, out
    # the signature is a real P-256 ECDSA signature under the key pedhsm holds
    r, s = int.from_bytes(sig.read_bytes()[:32]), int.from_bytes(sig.read_bytes()[32:])
    _public_key(p, "app-key").verify(
        utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    # a signature over other data is refused by the HSM (pkcs11-tool's words for
    # CKR_SIGNATURE_INVALID)
    digest.write_bytes(hashlib.sha256(b"other").digest())
    out = p.tool_ok("--verify", "-m", "ECDSA", "--label", "app-key", "--input-file",
                    str(digest), "--signature-file", str(sig), pin=challenge)
    assert "Invalid signature" in out and "Signature is valid" not in out, out

    # a second, independent PKCS#11 client on the same module
    _pykcs11_round(p)

    # idle connections to the client port while pkcs11-tool works: TLS ones from the
    # registered client's certificate, then 1,000 that never start TLS
    idle = _idle_connections(p.cps.ntls_port, tcp=IDLE_TCP, tls=IDLE_TLS,
                             client_home=p.cps.client_home, server_pem=p.work / "hsm1.pem")
    with idle as opened:
        assert opened == (IDLE_TLS, IDLE_TCP)
        digest.write_bytes(hashlib.sha256(data).digest())
        started = time.monotonic()
        p.tool_ok("--sign", "-m", "ECDSA", "--label", "app-key", "--input-file", str(digest),
                  "--output-file", str(sig), pin=challenge)
        assert time.monotonic() - started < 30
    _public_key(p, "app-key").verify(
        utils.encode_dss_signature(int.from_bytes(sig.read_bytes()[:32]),
                                   int.from_bytes(sig.read_bytes()[32:])),
        data, ec.ECDSA(hashes.SHA256()))

    # every byte of the 1792 hop: no challenge, no PED secret, in any form
    p.site.stop("hsmclient", p.cps.client_home)
    p.taps.wait_ended()
    records = p.taps.records()
    assert len(records["hsmclient <-> pedhsm, up"]) > 1000  # the tap saw the traffic
    needles = secrets_of(p.cps.keys, {}, {"challenge": challenge.encode()})
    assert "challenge" in needles and len(needles) > 3
    logs = {str(f.relative_to(p.work)): f.read_bytes()
            for home in (p.cps.hsm_home, p.cps.client_home) for f in home.rglob("*.log")}
    assert logs
    assert find(needles, {**records, **logs}) == []


def _pykcs11_app() -> None:
    """The second application, run as its own process (`_pykcs11_round`): PyKCS11 holds
    the interpreter's lock in its C calls, which would stall a byte tap in the test's own
    process.  The module and address come from the environment, the challenge on stdin."""
    import PyKCS11

    challenge = sys.stdin.readline().strip()
    lib: Any = PyKCS11.PyKCS11Lib()
    lib.load(str(P11KIT_CLIENT))
    [slot] = lib.getSlotList(tokenPresent=True)
    assert lib.getTokenInfo(slot).label.strip() == PARTITION
    session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    session.login(challenge)
    public, private = session.generateKeyPair(
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
         (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_VERIFY, True),
         (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),  # prime256v1
         (PyKCS11.CKA_LABEL, "py-key")],
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
         (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_SIGN, True), (PyKCS11.CKA_PRIVATE, True),
         (PyKCS11.CKA_SENSITIVE, True), (PyKCS11.CKA_LABEL, "py-key")],
        mecha=PyKCS11.MechanismECGENERATEKEYPAIR,
    )
    [found] = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                                   (PyKCS11.CKA_LABEL, "py-key")])
    digest = hashlib.sha256(b"PyKCS11 through hsmclient").digest()
    mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
    signature = bytes(session.sign(found, digest, mechanism))
    assert session.verify(public, digest, signature, mechanism)
    assert not session.verify(public, hashlib.sha256(b"x").digest(), signature, mechanism)
    # attributes: the public point is readable, the private value never is (PyKCS11 gives
    # None for an attribute the token answers CKR_ATTRIBUTE_SENSITIVE)
    [point] = session.getAttributeValue(public, [PyKCS11.CKA_EC_POINT])
    assert bytes(point)[:3] == b"\x04\x41\x04"  # DER OCTET STRING, uncompressed point
    assert session.getAttributeValue(
        private, [PyKCS11.CKA_SENSITIVE, PyKCS11.CKA_EXTRACTABLE]) == [True, False]
    assert session.getAttributeValue(private, [PyKCS11.CKA_VALUE]) == [None]
    # both keys found by label, then destroyed
    assert len(session.findObjects([(PyKCS11.CKA_LABEL, "py-key")])) == 2
    session.destroyObject(public)
    session.destroyObject(private)
    assert session.findObjects([(PyKCS11.CKA_LABEL, "py-key")]) == []
    session.logout()
    session.closeSession()
    print("PyKCS11 round done")


def _pykcs11_round(p: Path11) -> None:
    done = subprocess.run(
        [sys.executable, __file__], input=p.cps.challenge + "\n",
        env={**p.cps.app_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=p.work, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0 and "PyKCS11 round done" in done.stdout, done


class _idle_connections:
    """Idle connections to *port* held open until the block ends: first *tls* mutual TLS
    1.3 connections made with the registered client's own certificate (*client_home*'s
    identity; pedhsm's certificate *server_pem* as the trust anchor) that then say
    nothing, then *tcp* TCP connections that never start TLS.  ``as`` gives how many of
    each were opened."""

    def __init__(self, port: int, *, tcp: int, tls: int, client_home: Path,
                 server_pem: Path) -> None:
        self.port, self.tcp, self.tls = port, tcp, tls
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.check_hostname = False
        self.ctx.load_verify_locations(cafile=str(server_pem))
        self.ctx.load_cert_chain(str(client_home / "identity.pem"))
        self.socks: list[socket.socket] = []

    def __enter__(self) -> tuple[int, int]:
        for _ in range(self.tls):
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.socks.append(self.ctx.wrap_socket(raw))  # the handshake, then silence
        for _ in range(self.tcp):
            self.socks.append(socket.create_connection(("127.0.0.1", self.port), timeout=30))
        return self.tls, self.tcp

    def __exit__(self, *exc: object) -> None:
        for s in self.socks:
            s.close()


def test_failed_login_rules_through_the_real_path(path11: Path11) -> None:
    p = path11

    def attempts() -> int:
        """The Crypto Officer's login attempts left, as `partition show` says."""
        shown = p.hsm_ok("partition", "show", "--name", PARTITION)
        found = re.search(r"Crypto Officer: .*attempts left (\d+)", shown)
        assert found, shown
        return int(found.group(1))

    before = attempts()
    # a wrong challenge: CKR_PIN_INCORRECT, counted
    done = p.tool("--list-objects", pin="not-the-challenge")
    assert done.returncode != 0 and "CKR_PIN_INCORRECT" in done.stdout + done.stderr, done
    assert attempts() == before - 1
    # the right one works and resets the count
    p.tool_ok("--list-objects", pin=p.cps.challenge)
    assert attempts() == before

    # an unassigned partition is invisible to this client
    p.hsm_ok("partition", "create", "--name", "other")
    listed = p.tool_ok("-L")
    assert "token label        : other" not in listed and PARTITION in listed
    assert listed.count("token label") == 1, listed

    # the role deactivated: the login is refused (not a wrong PIN), not counted
    p.hsm_ok("role", "deactivate", "--partition", PARTITION, "--name", "co")
    done = p.tool("--list-objects", pin=p.cps.challenge)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "CKR_USER_PIN_NOT_INITIALIZED" in out, out
    assert attempts() == before
    done = p.tool("--list-objects", pin="not-the-challenge")
    assert "CKR_PIN_INCORRECT" not in done.stdout + done.stderr
    assert attempts() == before  # not counted: the challenge was never tried
    # pedhsm's log says who, what and the fix
    log = (p.cps.hsm_home / "pedhsm.log").read_text()
    assert "apphost" in log and "role activate" in log, log[-2000:]
    # activated again (the black key at the PED), the application logs in
    p.hsm_ok("role", "activate", "--partition", PARTITION, "--name", "co")
    p.tool_ok("--list-objects", pin=p.cps.challenge)


if __name__ == "__main__":
    _pykcs11_app()
