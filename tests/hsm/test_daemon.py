"""The real pedhsm daemon and shell: kill -9, restarts with a fake clock, error messages.

The HSM's local PED is the emulated PED (``emulated:KEYS?mode=local&operator=script:FILE``),
started by the daemon's driver as its own process.  In local mode every session begins
with the PED asking the operator to allow a cabled HSM without an orange key.  Each
daemon start spawns a new PED process that runs the script file from its first step: the
test rewrites the script before the first PED operation of each run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm import cli
from hsm.clock import TEST_CLOCK_ENV
from keys.colors import Color
from pedtools.testing import wait_for_log
from tests.hsm.emulated import Script, make_keyring

T0 = 1_800_000_000


class Shell:
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = tmp / "home"
        self.keys = tmp / "keys"
        self.script = tmp / "ped-script.toml"
        self.clock = tmp / "clock"
        self.clock.write_text(str(T0))
        self.blanks, self.extra = make_keyring(self.keys, blanks=8)
        self.capsys = capsys
        self.script.write_text("")

    def new_script(self) -> Script:
        return Script()

    def run(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--home", str(self.home), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self.run(*argv)
        assert code == 0, (argv, out, err)
        return out

    def start(self) -> None:
        uri = f"emulated:{self.keys}?mode=local&operator=script:{self.script}"
        self.ok("mode", "start", "--serial", "777001", "--local-ped", uri)

    def pid(self) -> int:
        return int((self.home / "pedhsm.pid").read_text())

    def kill9(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)  # `mode start` ran in this process: the daemon is our child
            return
        except ChildProcessError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def advance(self, seconds: float) -> None:
        self.clock.write_text(str(float(self.clock.read_text()) + seconds))


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


def test_failed_login_survives_kill_9(shell: Shell) -> None:
    b = shell.blanks
    s = shell.new_script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, shell.extra["stranger"])  # hsm login: wrong keyset
    s.write(shell.script)
    shell.start()
    out = shell.ok("hsm", "init", "--label", "killme")
    assert "Please attend to the PED." in out
    code, out, err = shell.run("hsm", "login")
    assert code == 1
    assert "Please attend to the PED." in out
    assert "1 consecutive failure(s) of 3" in err and "ZEROIZED" in err
    shell.kill9()  # at once: the failure was committed before the shell was answered

    s = shell.new_script()
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2])  # audit init (white key)
    s.session().read(Color.WHITE, b[2])  # audit login
    s.write(shell.script)
    shell.start()
    assert "SO login attempts left: 2" in shell.ok("hsm", "show")
    assert "HSM SO logged in." in shell.ok("hsm", "login")
    assert "SO login attempts left: 3" in shell.ok("hsm", "show")
    shell.ok("audit", "init")
    shell.ok("audit", "login")
    log = shell.ok("audit", "log", "show")
    assert "login failed" in log and "reason=a key of the right colour but another keyset" in log
    assert "power on" in log

    # policy 15 is destructive: refused without confirmation, then the HSM is zeroized
    code, _, err = shell.run("hsm", "changepolicy", "-policy", "15", "-value", "1")
    assert code == 1 and "ZEROIZES the HSM" in err and "--force" in err
    assert "HSM state:              initialised" in shell.ok("hsm", "show")
    out = shell.ok("hsm", "changepolicy", "--policy", "15", "--value", "1", "--force")
    assert "zeroized" in out
    assert "HSM state:              zeroized" in shell.ok("hsm", "show")
    assert "SO can reset partition PIN   On" in shell.ok("hsm", "showpolicies")
    shell.ok("mode", "stop")


def test_interactive_confirmation(shell: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    shell.start()
    answers = iter(["no", "proceed"])
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    code, _, err = shell.run("hsm", "zeroize")
    assert code == 1 and "zeroizing erases all partitions" in err
    code, out, err = shell.run("hsm", "zeroize")
    assert code == 0 and "HSM zeroized" in out and "WARNING" in err
    shell.ok("mode", "stop")


def test_auto_activation_across_daemon_restarts_with_the_fake_clock(shell: Shell) -> None:
    b = shell.blanks
    chal = shell.home.parent / "challenge.txt"
    chal.write_text("app challenge\n")
    s = shell.new_script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co
    s.session().read(Color.BLACK, b[4])  # role activate co
    s.write(shell.script)
    shell.start()
    assert "WARNING: test clock" in shell.ok("mode", "show")
    shell.ok("hsm", "init", "--label", "auto")
    shell.ok("hsm", "login")
    shell.ok("partition", "create", "--name", "p1")
    shell.ok("partition", "init", "--name", "p1")
    shell.ok("role", "login", "--partition", "p1", "--name", "so")
    shell.ok("partition", "changepolicy", "--name", "p1", "--policy", "22", "--value", "1")
    shell.ok("partition", "changepolicy", "--name", "p1", "--policy", "23", "--value", "1")
    shell.ok("role", "init", "--partition", "p1", "--name", "co", "--challenge-file", str(chal))
    shell.ok("role", "activate", "--partition", "p1", "--name", "co")
    login = ("role", "login", "--partition", "p1", "--name", "co", "--challenge-file", str(chal))
    assert "Please attend" not in shell.ok(*login)
    shell.ok("object", "create", "--partition", "p1", "--label", "k1")
    shell.ok("mode", "stop")

    shell.advance(2 * 3600)  # off for exactly two hours: still activated
    shell.start()
    out = shell.ok(*login)
    assert "Please attend" not in out
    assert "k1" in shell.ok("object", "list", "--partition", "p1")
    shell.ok("mode", "stop")

    shell.advance(2 * 3600 + 1)  # off for longer: the PED is needed again
    s = shell.new_script()
    s.session().read(Color.BLACK, b[4])
    s.write(shell.script)
    shell.start()
    assert "Please attend to the PED." in shell.ok(*login)
    shell.ok("mode", "stop")
    # the challenge secret is nowhere in the HSM's files (state, log, audit, sealed cache)
    for path in shell.home.iterdir():
        if path.is_file():
            assert b"app challenge" not in path.read_bytes(), path.name


def test_kill_9_while_waiting_at_the_ped_loses_nothing(shell: Shell) -> None:
    b = shell.blanks
    s = shell.new_script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session()  # hsm login: allowed on the PED, then the operator walks away
    s.write(shell.script)
    shell.start()
    shell.ok("hsm", "init", "--label", "waiting")
    login = subprocess.Popen(
        [sys.executable, "-m", "hsm.cli", "--home", str(shell.home), "hsm", "login"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert login.stdout is not None
    assert login.stdout.readline().strip().startswith("Please attend to the PED. It is the ")
    shell.kill9()  # the HSM loses power while the PED waits for the blue key
    _, err = login.communicate(timeout=30)
    assert login.returncode != 0 and "closed the control connection" in err
    s = shell.new_script()
    s.session().read(Color.BLUE, b[0])
    s.write(shell.script)
    shell.start()
    assert "SO login attempts left: 3" in shell.ok("hsm", "show")  # nothing was counted
    assert "HSM SO logged in." in shell.ok("hsm", "login")
    assert "chain intact" in shell.ok("audit", "log", "verify")
    shell.ok("mode", "stop")


def test_shell_error_messages(shell: Shell, tmp_path: Path) -> None:
    code, _, err = shell.run("hsm", "show")
    assert code == 3 and "is not running" in err
    code, _, err = shell.run("hsm", "ped", "timeout", "set", "--type", "pedk")
    assert code == 2 and "--seconds" in err
    code, _, err = shell.run("role", "login", "--partition", "p", "--name", "xx")
    assert code == 2 and "invalid choice" in err
    shell.start()
    code, _, err = shell.run("mode", "start")
    assert code == 1 and "already running" in err
    code, _, err = shell.run("hsm", "login")
    assert code == 1 and "zeroized; initialise it first with `hsm init`" in err
    code, _, err = shell.run("hsm", "ped", "timeout", "set", "-type", "pedk", "-seconds", "100")
    assert code == 1 and "takes 200-600 seconds (0 restores the default 200)" in err
    assert "pedk timeout" in shell.ok(
        "hsm", "ped", "timeout", "set", "-type", "pedk", "-seconds", "300"
    )
    assert "300" in shell.ok("hsm", "ped", "timeout", "show")
    code, _, err = shell.run("hsm", "changepolicy", "--policy", "15", "--value", "1")
    assert code == 1 and "initialise it first with `hsm init`" in err
    code, _, err = shell.run("partition", "create", "--name", "bad/name")
    assert code == 1 and "not valid: use 1-64 letters" in err
    code, _, err = shell.run("partition", "show", "--name", "nope")
    assert code == 1 and "no partition named 'nope'" in err
    code, _, err = shell.run("hsm", "zeroize")
    assert code == 1 and "confirm with --force" in err  # stdin is not a terminal
    assert "type 'proceed' when the shell asks" in err and "answer yes" not in err  # one word
    code, _, err = shell.run("hsm", "ped", "connect", "-ip", "127.0.0.1", "-port", "1503")
    assert code == 1 and "vector init" in err
    code, _, err = shell.run("audit", "log", "show")
    assert code == 1 and "only the auditor" in err
    out = shell.ok("hsm", "ped", "show")
    assert "local" in out and "Connected:          no" in out
    assert "chain intact" in shell.ok("audit", "log", "verify")
    # edit one line of the audit log: verify names it and fails
    log = shell.home / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    rec = json.loads(lines[0])
    rec["event"] = "nothing to see"
    lines[0] = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
    log.write_text("".join(lines))
    code, _, err = shell.run("audit", "log", "verify")
    assert code == 1 and "FAILED" in err and "line 1" in err and "altered" in err
    assert "stopping" in shell.ok("mode", "stop")
    code, _, err = shell.run("mode", "show")
    assert code == 3
    assert oct((shell.home).stat().st_mode & 0o777) == "0o700"


def test_a_corrupt_state_database_stops_the_start(shell: Shell) -> None:
    shell.start()
    shell.ok("mode", "stop")
    db = shell.home / "state.db"
    data = bytearray(db.read_bytes())
    data[:16] = b"not a database!!"
    db.write_bytes(bytes(data))
    code, _, err = shell.run("mode", "start")
    assert code == 1
    assert "did not start" in err and "state database" in err
    assert not (shell.home / "pedhsm.pid").exists()


def test_a_shell_that_goes_away_cancels_its_ped_operation(shell: Shell) -> None:
    b = shell.blanks
    s = shell.new_script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session()  # hsm login: allowed on the PED, then nobody presents a key
    s.session().read(Color.BLUE, b[0])  # the next login goes through
    s.write(shell.script)
    shell.start()
    shell.ok("hsm", "init", "--label", "cancel")
    login = subprocess.Popen(
        [sys.executable, "-m", "hsm.cli", "--home", str(shell.home), "hsm", "login"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert login.stdout is not None
    assert login.stdout.readline().strip().startswith("Please attend to the PED. It is the ")
    # the PED now waits for the key (the emulated PED's events go to the daemon's log)
    wait_for_log(shell.home / "pedhsm.log", "session 2: op-started blue")
    login.kill()  # the administrator gives up (the shell dies)
    login.communicate(timeout=30)
    # The HSM is free again at once (the PED wait of 200 s was cancelled), nothing counted.
    assert "HSM SO logged in." in shell.ok("hsm", "login")
    assert "SO login attempts left: 3" in shell.ok("hsm", "show")
    shell.ok("mode", "stop")


def test_luna_words_and_the_current_partition(shell: Shell) -> None:
    b = shell.blanks
    s = shell.new_script()
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so, with the current partition
    s.write(shell.script)
    shell.start()
    shell.ok("hsm", "init", "-label", "words")
    shell.ok("HSM", "LOGIN")
    shell.ok("par", "create", "-p", "p1")
    shell.ok("par", "create", "-p", "p2")
    code, _, err = shell.run("role", "login", "-name", "so")
    assert code == 2 and "partition select" in err
    code, _, err = shell.run("partition", "select", "-p", "nope")
    assert code == 1 and "no partition named 'nope'" in err
    assert not list(shell.home.glob("current-partition.*"))
    assert "Current partition: p1" in shell.ok("partition", "select", "-p", "p1")
    current = shell.home / f"current-partition.{os.getuid()}"
    assert oct(current.stat().st_mode & 0o777) == "0o600"
    assert "Current partition:     p1" in shell.ok("hsm", "sh")
    out = shell.ok("partition", "sh")
    assert "Partition Name:        p1" in out and "Current partition:     p1" in out
    assert "Partition Name:        p2" in shell.ok("partition", "sh", "-p", "p2")  # named wins
    shell.ok("partition", "init")
    assert "logged in" in shell.ok("role", "login", "-name", "so").lower()
    assert "Partition p1 policies:" in shell.ok("partition", "showP")
    assert "SO can reset partition PIN" in shell.ok("hsm", "showP")
    code, _, err = shell.run("partition", "resetPw")
    assert code == 1 and "no Crypto Officer to reset" in err
    shell.ok("partition", "delete", "-p", "p1", "--force")  # the current one: forgotten
    assert "Current partition:     (none)" in shell.ok("hsm", "show")
    shell.ok("mode", "stop")
