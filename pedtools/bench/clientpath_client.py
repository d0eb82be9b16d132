"""One application of the client-path figure: signs (or its baselines) while told to, timed.

    python -m pedtools.bench.clientpath_client JOB.json

A worker process stands for one application with one PKCS#11 session.  Its job (JSON):
``mode`` is ``sign`` (C_Sign, CKM_ECDSA on a SHA-256 digest, with the partition's key
labelled ``label``, through the PKCS#11 ``module``: p11-kit-client.so), ``random``
(C_GenerateRandom of a signature's size through the same module and hops: the same round
trip with no signature), ``local`` (the same ECDSA P-256 signature made in this process
with ``cryptography``), or ``bare`` (the same number of bytes sent to ``socket`` and read
back: a bare round trip over the same hops, `pedtools.bench.clientpath_relay`).  The
PKCS#11 modes log in with the challenge secret read from ``challenge_file``.

Protocol on stdin/stdout, one JSON line each: the worker prints ``{"ready": true}`` once
its session is open; for each line ``go SECONDS`` it works back to back for that long and
prints ``{"result": {"ms": [...], "seconds": S}}``; it exits at end of input.  PyKCS11 is
used (the project's test extra); nothing secret is ever printed.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

#: An ECDSA P-256 signature as PKCS#11 returns it (r || s): the size every mode moves.
SIGNATURE_BYTES = 64
DIGEST = hashlib.sha256(b"client path bench").digest()

Operation = Callable[[], object]


def _pkcs11(job: dict[str, Any]) -> Operation:
    # the test extra, untyped; imported here so that `local` and `bare` need none of it
    PyKCS11: Any = importlib.import_module("PyKCS11")
    lib = PyKCS11.PyKCS11Lib()
    lib.load(job["module"])
    slots = lib.getSlotList(tokenPresent=True)
    if not slots:
        raise RuntimeError("the PKCS#11 module shows no token (is hsmclient running?)")
    session = lib.openSession(slots[0], PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    pin = Path(job["challenge_file"]).read_text().strip()
    session.login(pin)
    del pin
    if job["mode"] == "random":
        return lambda: session.generateRandom(SIGNATURE_BYTES)
    [key] = session.findObjects(
        [(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, job["label"])]
    )
    mechanism = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA, None)
    return lambda: session.sign(key, DIGEST, mechanism)


def _local() -> Operation:
    key = ec.generate_private_key(ec.SECP256R1())
    algorithm = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    return lambda: key.sign(DIGEST, algorithm)


def _bare(path: str) -> Operation:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    payload = bytes(SIGNATURE_BYTES)

    def round_trip() -> None:
        conn.sendall(payload)
        got = 0
        while got < len(payload):
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError("the relay closed the connection")
            got += len(chunk)

    return round_trip


def operation(job: dict[str, Any]) -> Operation:
    mode = job["mode"]
    if mode in ("sign", "random"):
        return _pkcs11(job)
    if mode == "local":
        return _local()
    if mode == "bare":
        return _bare(job["socket"])
    raise ValueError(f"unknown mode {mode!r}")


def work(op: Operation, seconds: float) -> dict[str, Any]:
    samples: list[float] = []
    started = time.perf_counter()
    end = started + seconds
    now = started
    while now < end:
        op()
        done = time.perf_counter()
        samples.append((done - now) * 1000)
        now = done
    return {"ms": [round(s, 4) for s in samples], "seconds": now - started}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    op = operation(job)
    op()  # the first call pays for any lazy setup: not a sample
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        word, _, value = line.partition(" ")
        if word != "go":
            break
        print(json.dumps({"result": work(op, float(value))}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
