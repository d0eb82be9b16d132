"""The whole demo flow at debug level: no secret, PIN, derived secret or RPV anywhere.

The demo runs in a directory we keep.  Afterwards every PED secret is rebuilt from the key
images (the M of N shares), the login secret the PED hands the HSM is derived with the
operators' PINs (and the mistyped one), and every one of them, with the shares, the PINs
and the challenge secret, is searched for in raw, hex and base64 forms in: the demo's
output and every file the programs left (pedserver's, pedclient's and pedhsm's logs, the
emulated PEDs' logs and screen logs, the HSM's audit log and state).  Only the key images
and the files the secrets were given in may hold them.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from keys import Color, Keyring, read_pin_file
from pedtools.testing import processes_naming
from pedtools.testing.secret_scan import Needles, find, secrets_of
from tests.system.demo_run import run_demo

SECRET_FILES = {"pins.txt", "wrong-pins.txt", "challenge.txt"}


def _needles(root: Path) -> Needles:
    """What must not leak, by name: each keyset's secret, shares and login secrets, the
    PINs and the challenge."""
    keysets = {e.header.keyset_id: e.header.color for e in Keyring(root / "keyring").keys()
               if e.header is not None}
    assert len(keysets) == 6  # orange, HSM SO, HSM domain, partition SO, domain, CO
    assert set(keysets.values()) == {Color.ORANGE, Color.BLUE, Color.RED, Color.BLACK}
    tables = {"": read_pin_file(root / "pins.txt"),
              "wrong ": read_pin_file(root / "wrong-pins.txt")}
    challenge = (root / "challenge.txt").read_text().strip().encode()
    needles = secrets_of(root / "keyring", tables, {"challenge": challenge})
    assert "RPV" in needles and "login secret of blue HSM SO" in needles
    return needles


def _haystacks(root: Path, output: str) -> dict[str, bytes]:
    stacks = {"demo output": output.encode()}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in SECRET_FILES:
            continue
        if path.relative_to(root).parts[0] == "keyring":
            continue  # the key images hold the shares: that is what a PED key is
        stacks[str(path.relative_to(root))] = path.read_bytes()
    return stacks


def test_no_secret_in_any_output_or_log_at_debug_level() -> None:
    root = Path(tempfile.mkdtemp(prefix="pdsec-"))
    try:
        run = run_demo("--dir", str(root), "--log-level", "debug")
        assert run.code == 0, run.out + run.err
        assert run.root == root.resolve()
        assert not processes_naming(str(root))
        needles = _needles(root)
        stacks = _haystacks(root, run.out + run.err)
        # the scan sees what it must: debug logs of both daemons, pedhsm's log and audit
        # trail, the emulated PEDs' events, the HSM's state
        names = set(stacks)
        for expected in (
            "home-pedserver/pedserver.log",
            "home-pedserver-2/pedserver.log",
            "home-pedclient/pedclient.log",
            "home-pedhsm/pedhsm.log",
            "home-pedhsm/audit.log",
            "home-pedhsm/state.db",
            "watched_ped-1.log",
            "ped-ws-screen.jsonl",
            "ped-ws2-screen.jsonl",
            "ped-hsm-screen.jsonl",
        ):
            assert expected in names, sorted(names)
        # (started with --log-level debug; they log their link and PED events)
        assert (
            b"PED handshake orange hsm 150001 result ok" in stacks["home-pedserver/pedserver.log"]
        )
        assert b"link 1 up" in stacks["home-pedclient/pedclient.log"]
        assert b"pedemu: session" in stacks["watched_ped-1.log"]  # the workstation's PED
        assert b"Enter PED PIN" in stacks["ped-ws-screen.jsonl"]  # its screens
        # positive control: the scan finds a needle where one is (any of its forms)
        planted = {"control": b"rpv " + sorted(needles["RPV"], key=len)[-1] + b"\n"}
        assert "RPV in control" in find(needles, planted)  # (a 1-of-1 share is the secret)
        assert find(needles, stacks) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
