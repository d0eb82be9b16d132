"""A minimal HSM side, one step per process, correct or broken on purpose: checks the HSM suite.

``python -m pedtools.conform.hsm_double --state DIR --keyring K --pedclient SOCK STEP``
runs one step of `hsm_steps` (connect, init, login, show-counter...) the way an HSM
built on `ped.hsm_api` would: each step opens a link through the local endpoint at SOCK,
runs the RPV handshake with the RPV of the orange key in K, and does its operation.  It
counts failed logins as PROTOCOL.md section 4 says, in ``DIR/state.json`` (which also
keeps the blue keyset's id and the SHA-256 of its login secret, never the secret).

Each step opens and closes its own link, so ``show-link`` prints what the double
believes of its link (``connected: yes`` after a connect, ``no`` after a disconnect or a
login whose channel or link failed), as an HSM that keeps its session would.

``--break`` makes it wrong on purpose, so that tests can check that `pedconform hsm`
fails the named cases: ``count-wrong-colour`` counts a WRONG_COLOR answer (case 3.3),
``count-channel`` counts a channel or link failure (3.1, 3.2, 4.1), ``show-stale`` keeps
saying connected after a channel or link failure (3.1, 3.2, 4.1).  It also shows an
HSM maker how little a ``--hsm-cmd`` adapter needs: ``--hsm-cmd 'python -m
pedtools.conform.hsm_double --state DIR --keyring K --pedclient SOCK {step}'``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import trio

from keys import wipe
from ped import hsm_api
from pedtools.conform.faulty_ped import FaultyPed, Wire

BREAKS = ("count-wrong-colour", "count-channel", "show-stale")
SERIAL = "CONFORM-HSM"


def _load(state: Path) -> dict[str, Any]:
    path = state / "state.json"
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {"failures": 0}


def _save(state: Path, data: dict[str, Any]) -> None:
    tmp = state / "state.json.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(state / "state.json")


async def _session_step(args: argparse.Namespace, data: dict[str, Any]) -> int:
    rpv = FaultyPed(args.keyring, Wire()).orange_rpv()
    transport = await hsm_api.connect_via_pedclient(args.pedclient, args.host, args.port)
    try:
        async with hsm_api.open_ped_session(
            transport, rpv=rpv, hsm_serial=SERIAL, op_timeout=args.op_timeout, cancel_grace=2
        ) as ped:
            wipe(rpv)
            if args.step == "init":
                new = bytearray(secrets.token_bytes(32))
                with await ped.imprint(hsm_api.Color.BLUE, new_secret=new, label="HSM SO") as done:
                    secret = done.secret if done.secret is not None else new
                    data["keyset"] = done.keyset_id.hex()
                    data["digest"] = hashlib.sha256(secret).hexdigest()
                wipe(new)
                data["failures"] = 0
            elif args.step == "login":
                keyset = bytes.fromhex(data["keyset"])
                with await ped.read_secret(hsm_api.Color.BLUE, keyset, label="HSM SO") as got:
                    digest = hashlib.sha256(got.secret).hexdigest()
                if not hmac.compare_digest(digest, data["digest"]):
                    data["failures"] += 1
                    print("login failed: wrong secret (counted)")
                    return 1
                data["failures"] = 0
                print("logged in")
        return 0
    finally:
        wipe(rpv)
        await transport.aclose()


def _channel_failed(error: Exception) -> bool:
    """Whether *error* is a channel or link failure: the session is gone (PROTOCOL.md 3.6)."""
    return isinstance(error, hsm_api.TransportError | hsm_api.RemoteProtocolError)


def _counts(error: Exception, breaks: list[str]) -> bool:
    """Whether *error* ends a login as a counted failure (PROTOCOL.md 4, 7)."""
    if isinstance(error, hsm_api.KeysetMismatch):
        return True
    if isinstance(error, hsm_api.WrongColor):
        return "count-wrong-colour" in breaks
    if _channel_failed(error):
        return "count-channel" in breaks
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hsm_double", description=__doc__)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--keyring", type=Path, required=True)
    parser.add_argument("--pedclient", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1503)
    parser.add_argument("--op-timeout", type=float, default=hsm_api.DEFAULT_OP_TIMEOUT)
    parser.add_argument("--break", dest="breaks", action="append", default=[], choices=BREAKS)
    parser.add_argument("step")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    data = _load(args.state)
    if args.step == "show-counter":
        print(f"failed logins: {data['failures']}")
        return 0
    if args.step == "show-link":
        print(f"connected: {'yes' if data.get('connected') else 'no'}")
        return 0
    if args.step == "disconnect":
        data["connected"] = False
        _save(args.state, data)
        return 0  # every step opens and closes its own link and session
    if args.step == "logout":
        return 0
    if args.step == "login" and "keyset" not in data:
        print("not initialised", file=sys.stderr)
        return 1
    try:
        done = trio.run(_session_step, args, data)
        if args.step == "connect":
            data["connected"] = done == 0
        return done
    except Exception as exc:
        if args.step == "login" and _counts(exc, args.breaks):
            data["failures"] += 1
        if args.step == "connect" or (_channel_failed(exc) and "show-stale" not in args.breaks):
            data["connected"] = False
        print(f"{args.step} failed: {exc}", file=sys.stderr)
        return 1
    finally:
        _save(args.state, data)


if __name__ == "__main__":
    raise SystemExit(main())
