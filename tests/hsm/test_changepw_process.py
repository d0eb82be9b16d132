"""`role changepw` through the real pedhsm daemon and shell, and kill -9 during it.

A power cut (kill -9 of the daemon) at any moment of a secret change leaves either the
old key or the new one opening the role, never neither, and the partition's objects
reachable.  The kill points are drawn from a seeded generator over the time one change
takes (measured first, on the same machine), a bounded number of times.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import cli
from hsm.clock import TEST_CLOCK_ENV
from keys import Keyring, read_header
from keys.colors import Color
from tests.hsm.emulated import Script, make_keyring

pytestmark = pytest.mark.process

SEED = 20261203
KILLS = 5
LOGIN_CO = ("role", "login", "--partition", "p1", "--name", "co")


class Shell:
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = tmp / "home"
        self.keys = tmp / "keys"
        self.script = tmp / "ped-script.toml"
        self.clock = tmp / "clock"
        self.clock.write_text("1800000000")
        self.blanks, _ = make_keyring(self.keys, blanks=6 + KILLS + 2)
        self.capsys = capsys
        self.script.write_text("")

    def ok(self, *argv: str) -> str:
        self.capsys.readouterr()
        code = cli.main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        assert code == 0, (argv, out, err)
        return out

    def start(self, script: Script) -> None:
        script.write(self.script)
        uri = f"emulated:{self.keys}?mode=local&operator=script:{self.script}"
        self.ok("mode", "start", "--serial", "777002", "--local-ped", uri)

    def changepw(self, challenge: Path) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "hsm.cli", "--home", str(self.home), *LOGIN_CO[:1],
                "changepw", *LOGIN_CO[2:], "--challenge-file", str(challenge)]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kill9(self) -> None:
        pid = int((self.home / "pedhsm.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)  # `mode start` ran in this process: the daemon is our child
        except ChildProcessError:
            pass

    def co_keyset(self) -> bytes:
        with sqlite3.connect(self.home / "state.db") as db:
            row = db.execute("SELECT keyset_id FROM roles WHERE scope='p1' AND role='co'")
            return bytes(row.fetchone()[0])


@pytest.fixture
def shell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shell]:
    s = Shell(tmp_path, capsys)
    monkeypatch.setenv(TEST_CLOCK_ENV, str(s.clock))
    monkeypatch.delenv("PEDHSM_HOME", raising=False)
    yield s
    if (s.home / "pedhsm.pid").exists():
        cli.main(["--home", str(s.home), "mode", "stop"])


def _round(current: str, new: str) -> Script:
    """One daemon run: the CO logs in, then changes its secret to a new black key set."""
    s = Script()
    s.session().read(Color.BLACK, current)  # role login co
    s.session().read(Color.BLACK, current)  # role changepw: the proof
    s.session().imprint(new)  # role changepw: the new black key set
    return s


def test_changepw_on_the_shell_and_kill_9_at_seeded_points(
    shell: Shell, tmp_path: Path
) -> None:
    b = shell.blanks
    s = Script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co
    s.session().read(Color.BLACK, b[4])  # role login co
    s.session().read(Color.BLACK, b[4])  # hsm... role changePw -name co: the proof
    s.session().imprint(b[5])  # the new black key set
    shell.start(s)
    shell.ok("hsm", "init", "--label", "changepw")
    shell.ok("hsm", "login")
    shell.ok("partition", "create", "--name", "p1")
    shell.ok("partition", "init", "--name", "p1")
    shell.ok("role", "login", "--partition", "p1", "--name", "so")
    shell.ok("role", "init", "--partition", "p1", "--name", "co")
    shell.ok(*LOGIN_CO)
    shell.ok("object", "create", "--partition", "p1", "--label", "k1")
    challenge = tmp_path / "challenge"
    challenge.write_text("challenge 0\n")
    # Luna's spelling, and the time one change takes here (the kills are drawn within it)
    began = time.monotonic()
    out = shell.ok("role", "changePw", "-p", "p1", "-name", "co", "-challenge-file",
                   str(challenge))  # fmt: skip
    took = time.monotonic() - began
    assert "Crypto Officer of partition 'p1': PED secret and challenge secret changed" in out
    assert "Please attend to the PED." in out
    shell.ok("mode", "stop")

    rng = random.Random(SEED)
    current, landed = b[5], []
    for n in range(KILLS):
        new = b[6 + n]
        before = shell.co_keyset()
        shell.start(_round(current, new))
        shell.ok(*LOGIN_CO)  # the key the HSM holds opens the CO: never neither
        assert "k1" in shell.ok("object", "list", "--partition", "p1")
        challenge.write_text(f"challenge {n + 1}\n")
        change = shell.changepw(challenge)
        assert change.stdout is not None
        # wait until the command reached the HSM, then cut the power at a seeded point
        assert change.stdout.readline().startswith("Please attend to the PED.")
        time.sleep(rng.uniform(0.0, took * 1.2))
        shell.kill9()
        change.communicate(timeout=30)
        after = shell.co_keyset()
        written = read_header(shell.keys / new).keyset_id
        assert after in (before, written), "the CO's key set is neither the old nor the new"
        landed.append("new" if after != before else "old")
        if after != before:
            current = new
    # after the last kill: the key the HSM names opens the CO and the object is there
    s = Script()
    s.session().read(Color.BLACK, current)
    shell.start(s)
    shell.ok(*LOGIN_CO)
    assert "k1" in shell.ok("object", "list", "--partition", "p1")
    assert "chain intact" in shell.ok("audit", "log", "verify")
    shell.ok("mode", "stop")
    print("kills landed:", landed, f"(one change took {took:.2f} s)")
    assert len(landed) == KILLS
    assert Keyring(shell.keys).damaged() == []
