"""Attack 11 through the real pedhsm daemon: a challenge secret guessed wrong until the
Crypto Officer locks out, then the lockout honoured across restarts (a clean one and a
kill -9), with HSM policy 15 off (permanent lock) and on (until the partition SO resets).

Each guess presents the genuine black PED key (the PED reads it) with a wrong challenge
secret: a counted failure.  Partition policy 20 lowers the CO threshold to 3 to keep the
run short.  After the lockout the right key with the right challenge is refused too, by
the restarted daemon, without the PED being asked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keys import Keyring
from keys.colors import Color
from tests.hsm.emulated import Script
from tests.hsm.test_daemon import Shell

THRESHOLD = 3


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("policy15", [False, True], ids=["policy15-off", "policy15-on"])
def test_wrong_challenge_until_lockout_then_restarts(shell: Shell, policy15: bool) -> None:
    shell.blanks += [p.name for p in Keyring(shell.keys).add_blanks(4)]
    b = shell.blanks
    good = _write(shell.home.parent / "challenge.txt", "the right challenge\n")
    bad = _write(shell.home.parent / "guess.txt", "a guess\n")
    s = Script()
    if policy15:
        s.session().imprint(b[8]).imprint(b[9])  # hsm init, then policy 15 zeroizes it
        s.session().read(Color.BLUE, b[8])  # hsm login (to change policy 15)
    s.session().imprint(b[0]).imprint(b[1])  # hsm init
    s.session().read(Color.BLUE, b[0])  # hsm login
    s.session().imprint(b[2]).imprint(b[3])  # partition init
    s.session().read(Color.BLUE, b[2])  # role login so
    s.session().imprint(b[4])  # role init co
    s.session().read(Color.BLACK, b[4])  # role login co: the right challenge
    for _ in range(THRESHOLD):
        s.session().read(Color.BLACK, b[4])  # the genuine key, a wrong challenge
    s.write(shell.script)
    shell.start()
    if policy15:
        shell.ok("hsm", "init", "--label", "first")
        shell.ok("hsm", "login")
        shell.ok("hsm", "changepolicy", "--policy", "15", "--value", "1", "--force")
    shell.ok("hsm", "init", "--label", "chal")
    shell.ok("hsm", "login")
    shell.ok("partition", "create", "--name", "p1")
    shell.ok("partition", "init", "--name", "p1")
    shell.ok("role", "login", "--partition", "p1", "--name", "so")
    shell.ok("partition", "changepolicy", "--name", "p1", "--policy", "20",
             "--value", str(THRESHOLD))
    shell.ok("role", "init", "--partition", "p1", "--name", "co", "--challenge-file", str(good))
    login = ("role", "login", "--partition", "p1", "--name", "co", "--challenge-file")
    shell.ok(*login, str(good))
    shell.ok("object", "create", "--partition", "p1", "--label", "k1")
    shell.ok("role", "logout", "--partition", "p1")

    for i in range(1, THRESHOLD):
        code, _, err = shell.run(*login, str(bad))
        assert code == 1 and "challenge" in err and f"{i} consecutive failure" in err, err
    code, _, err = shell.run(*login, str(bad))
    assert code == 1 and f"failed {THRESHOLD} times in a row" in err, err
    expected = "resetpw" if policy15 else "permanently locked"
    assert expected in err
    assert "the right challenge" not in err and "a guess" not in err

    def still_locked() -> None:
        code, out, err = shell.run(*login, str(good))
        assert code == 1 and expected in err, err
        assert "Please attend to the PED." not in out  # refused before the PED is asked
        code, _, err = shell.run("role", "login", "--partition", "p1", "--name", "cu")
        assert code == 1

    still_locked()
    shell.ok("mode", "stop")
    shell.start()
    still_locked()
    shell.kill9()
    shell.start()
    still_locked()
    shell.ok("mode", "stop")
    state = (shell.home / "state.db").read_bytes()
    assert b"the right challenge" not in state and b"a guess" not in state
