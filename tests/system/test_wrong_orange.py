"""A wrong orange key through the real daemons: both ends refuse, nothing is counted."""

from __future__ import annotations

import json

from keys import Color, Keyring
from pedtools.testing import RemotePed, wait_for_log

REFUSED = "does not hold this HSM's Remote PED Vector (RPV)"


def test_wrong_orange_key_is_refused_on_both_ends_and_not_counted(remote_ped: RemotePed) -> None:
    site = remote_ped.site
    local_keys = site.root / "cabled-keys"
    assert site.run("pedkey", "blank", "--count", "4", "--dir", str(local_keys)).code == 0
    home = site.home("pedhsm")
    site.start(
        "pedhsm",
        home,
        "--serial",
        "150009",
        "--local-ped",
        f"emulated:{local_keys}?mode=local&operator=auto",
        "--pedclient",
        str(remote_ped.pedclient_socket),
    )

    def hsm(*args: str) -> tuple[int, str]:
        r = site.run("pedhsm", "--home", str(home), *args)
        return r.code, r.output

    for args in (("hsm", "init", "--label", "wrong-orange"), ("hsm", "login")):
        assert hsm(*args)[0] == 0
    assert hsm("hsm", "ped", "vector", "init")[0] == 0  # the HSM's own orange key, cabled PED
    assert hsm("hsm", "logout")[0] == 0

    # the remote PED's keyring holds someone else's orange key
    code, out = hsm(
        "hsm", "ped", "connect", "--ip", remote_ped.host, "--port", str(remote_ped.port)
    )
    assert code == 1
    assert "PED operation required to connect to Remote PED - use orange PED Key(s)." in out
    assert REFUSED in out and "present the right orange key" in out
    shown = hsm("hsm", "ped", "show")[1]
    assert "PED mode:           local" in shown and "Connected:          no" in shown
    # the PED refused too: its handshake event, relayed into pedserver's log
    server_log = wait_for_log(remote_ped.pedserver_log(),
                              "PED handshake orange hsm 150009 result rpv-mismatch")
    assert "pedemu: session 1: handshake orange hsm 150009 result rpv-mismatch" in server_log
    # nothing counted: SO attempts intact, no failed login in the audit trail
    assert "SO login attempts left: 3" in hsm("hsm", "show")[1]
    events = [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert "login failed" not in names
    [failed] = [e for e in events if e["event"] == "ped connect failed"]
    assert REFUSED in failed["reason"]
    assert "chain intact" in hsm("audit", "log", "verify")[1]

    # the right orange key at the remote PED: erase the stranger's, bring a copy of ours
    [stranger] = remote_ped.orange_keys
    assert site.run("pedkey", "erase", "--yes", str(stranger)).code == 0
    [ours] = [e.path for e in Keyring(local_keys).keys(color=Color.ORANGE)]
    blank = Keyring(remote_ped.keyring).blanks()[0]
    assert site.run("pedkey", "duplicate", "--to", str(blank), str(ours)).code == 0
    code, out = hsm(
        "hsm", "ped", "connect", "--ip", remote_ped.host, "--port", str(remote_ped.port)
    )
    assert code == 0 and "Remote PED connected" in out, out
    wait_for_log(remote_ped.pedserver_log(), "PED handshake orange hsm 150009 result ok")
    assert "SO login attempts left: 3" in hsm("hsm", "show")[1]
    assert hsm("hsm", "ped", "disconnect")[0] == 0
    site.stop("pedhsm", home)
