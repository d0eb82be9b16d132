"""The whole demo flow at debug level: no secret, PIN, derived secret or RPV anywhere.

The demo runs in a directory we keep.  Afterwards every PED secret is rebuilt from the key
images (the M of N shares), the login secret the PED hands the HSM is derived with the
operators' PINs (and the mistyped one), and every one of them, with the shares, the PINs
and the challenge secret, is searched for in raw, hex and base64 forms in: the demo's
output and every file the daemons left in their homes (pedserver's, pedclient's and
pedhsm's logs, the emulated PED's messages within pedserver's log, the HSM's audit log and
state).  Only the key images and the files the secrets were given in may hold them.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from keys import Color, Keyring, ShareCollector, load_image, read_pin_file, secret_for_hsm, wipe
from keys.pin import pin_for_label
from pedtools.testing import processes_naming
from tests.system.demo_run import run_demo

SECRET_FILES = {"pins.txt", "wrong-pins.txt", "challenge.txt"}


def _forms(data: bytes) -> set[bytes]:
    forms = set()
    for piece in (data, data[:16]):
        b64 = base64.b64encode(piece)
        url = base64.urlsafe_b64encode(piece)
        forms |= {
            piece,
            piece.hex().encode(),
            piece.hex().upper().encode(),
            b64,
            b64.rstrip(b"="),
            url,
            url.rstrip(b"="),
        }
    return forms


def _needles(root: Path) -> dict[str, set[bytes]]:
    """What must not leak, by name: each keyset's secret, shares and login secrets, the
    PINs and the challenge."""
    pins = read_pin_file(root / "pins.txt")
    wrong = read_pin_file(root / "wrong-pins.txt")
    needles: dict[str, set[bytes]] = {}
    for label, pin in [*pins.items(), *(("wrong " + k, v) for k, v in wrong.items())]:
        needles[f"PIN of {label}"] = {pin.encode()}
    challenge = (root / "challenge.txt").read_text().strip()
    needles["challenge"] = _forms(challenge.encode())
    keysets = defaultdict(list)
    for entry in Keyring(root / "keyring").keys():
        assert entry.header is not None
        keysets[entry.header.keyset_id].append(entry.path)
    assert len(keysets) == 6  # orange, HSM SO, HSM domain, partition SO, domain, CO
    colors = set()
    for keyset_id, paths in keysets.items():
        first = load_image(paths[0]).header
        assert first.color is not None and first.label is not None
        colors.add(first.color)
        collector = ShareCollector(first.color, keyset_id)
        for path in paths:
            image = load_image(path)
            share = image.share()
            needles[f"share {path.name}"] = _forms(bytes(share.value))
            share.wipe()
            if not collector.complete:
                collector.add(image)
            image.wipe()
        secret = collector.secret()
        name = f"{first.color.label} {first.label}"
        needles[f"secret of {name}"] = _forms(bytes(secret))
        if first.pin_protected:
            for which, table in (("", pins), ("wrong-PIN ", wrong)):
                login = secret_for_hsm(secret, keyset_id, pin_for_label(table, first.label))
                needles[f"{which}login secret of {name}"] = _forms(bytes(login))
                wipe(login)
        else:
            assert first.color is Color.ORANGE  # the RPV: the secret itself
            needles["RPV"] = _forms(bytes(secret))
        wipe(secret)
    assert colors == {Color.ORANGE, Color.BLUE, Color.RED, Color.BLACK}
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


def _hits(needles: dict[str, set[bytes]], stacks: dict[str, bytes]) -> list[str]:
    return [
        f"{what} in {where}"
        for what, forms in needles.items()
        for where, data in stacks.items()
        if any(form in data for form in forms)
    ]


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
        ):
            assert expected in names, sorted(names)
        # (started with --log-level debug; they log their link and PED events)
        assert (
            b"PED handshake orange hsm 150001 result ok" in stacks["home-pedserver/pedserver.log"]
        )
        assert b"link 1 up" in stacks["home-pedclient/pedclient.log"]
        assert b"pedemu: session" in stacks["home-pedserver/pedserver.log"]
        # positive control: the scan finds a needle where one is (any of its forms)
        planted = {"control": b"rpv " + sorted(needles["RPV"], key=len)[-1] + b"\n"}
        assert "RPV in control" in _hits(needles, planted)  # (a 1-of-1 share is the secret)
        assert _hits(needles, stacks) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)
