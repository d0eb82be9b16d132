"""One application signing through an HA group's virtual slot, in a loop, each call timed.

    python -m pedtools.bench.ha_client JOB.json

The job (JSON): ``module`` (p11-kit-client.so), ``group`` (the virtual slot's token
label), ``label`` (the key pair to use, generated through the group if ``generate``),
``challenge_file``.  PyKCS11 is used (the project's test extra), as an application does.

Protocol on stdin/stdout, one JSON line each: the worker prints ``{"ready": true}`` once
logged in with its key; ``go`` starts the loop (back to back C_Sign, CKM_ECDSA on a
SHA-256 digest; each signature verified with the public key in this process), printing
``{"ok": N, "failed": F}`` every `PROGRESS` signatures; ``stop`` ends it and prints the
summary: counts, the first errors, and every call's (start, end) on the system's
monotonic clock (the same in every process, so the caller can place a kill among them).
Nothing secret is ever printed.  `Signer` runs one from the caller's side.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

DIGEST = hashlib.sha256(b"HA group bench").digest()
#: Signatures between two progress lines.
PROGRESS = 20


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _session(job: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    PyKCS11: Any = importlib.import_module("PyKCS11")  # the test extra, untyped
    lib = PyKCS11.PyKCS11Lib()
    lib.load(job["module"])
    slot = next((s for s in lib.getSlotList(tokenPresent=True)
                 if lib.getTokenInfo(s).label.strip() == job["group"]), None)  # fmt: skip
    if slot is None:
        raise RuntimeError(f"no token labelled {job['group']!r} (is the HA group there?)")
    session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    session.login(Path(job["challenge_file"]).read_text().strip())
    label = job["label"]
    if job.get("generate"):
        session.generateKeyPair(
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
             (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_VERIFY, True),
             (PyKCS11.CKA_EC_PARAMS, bytes.fromhex("06082a8648ce3d030107")),
             (PyKCS11.CKA_LABEL, label)],
            [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_EC),
             (PyKCS11.CKA_TOKEN, True), (PyKCS11.CKA_SIGN, True), (PyKCS11.CKA_PRIVATE, True),
             (PyKCS11.CKA_SENSITIVE, True), (PyKCS11.CKA_LABEL, label)],
            mecha=PyKCS11.MechanismECGENERATEKEYPAIR,
        )  # fmt: skip
    [key] = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                                 (PyKCS11.CKA_LABEL, label)])  # fmt: skip
    [pub] = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PUBLIC_KEY),
                                 (PyKCS11.CKA_LABEL, label)])  # fmt: skip
    [point] = session.getAttributeValue(pub, [PyKCS11.CKA_EC_POINT])
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(point)[2:])
    return session, key, PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None), public


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    session, key, mechanism, public = _session(job)
    _say({"ready": True})
    stop = threading.Event()
    go = threading.Event()

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "go":
                go.set()
            elif line.strip() == "stop":
                break
        stop.set()
        go.set()

    threading.Thread(target=commands, daemon=True).start()
    go.wait()
    ok = failed = 0
    errors: list[str] = []
    calls: list[tuple[float, float]] = []
    algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    while not stop.is_set():
        started = time.monotonic()
        try:
            signature = bytes(session.sign(key, DIGEST, mechanism))
            r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
            public.verify(utils.encode_dss_signature(r, s), DIGEST, algorithm)
            ok += 1
        except Exception as exc:  # counted and reported, the loop goes on
            failed += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
        calls.append((started, time.monotonic()))
        if (ok + failed) % PROGRESS == 0:
            _say({"ok": ok, "failed": failed})
    _say({"done": True, "ok": ok, "failed": failed, "errors": errors, "calls": calls})


class Signer:
    """A `main` worker process, driven from the caller (the test, the bench)."""

    def __init__(self, job: dict[str, Any], env: dict[str, str], work: Path) -> None:
        self.job_file = work / f"ha-job-{job['label']}.json"
        self.job_file.write_text(json.dumps(job))
        self.log = work / f"ha-signer-{job['label']}.log"
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pedtools.bench.ha_client", str(self.job_file)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )  # fmt: skip
        self.ok = self.failed = 0
        self.line()  # ready

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(30)
            raise RuntimeError(f"the HA signer exited ({self.proc.returncode}):\n"
                               + self.log.read_text(errors="replace")[-3000:])
        said: dict[str, Any] = json.loads(text)
        self.ok, self.failed = said.get("ok", self.ok), said.get("failed", self.failed)
        return said

    def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def until(self, count: int) -> None:
        """Wait for *count* more signatures (an event, not a time)."""
        target = self.ok + self.failed + count
        while self.ok + self.failed < target:
            self.line()

    def stop(self) -> dict[str, Any]:
        self.send("stop")
        while True:
            said = self.line()
            if said.get("done"):
                self.proc.wait(30)
                return said


if __name__ == "__main__":
    main(sys.argv[1])
