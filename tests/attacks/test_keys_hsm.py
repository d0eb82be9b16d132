"""Attacks 9 and 10 through the real pedhsm daemon and its emulated PED (script operator).

What the PED refuses on its own screen (a key of the wrong colour, a blank, a tampered
image, a share already read) is re-prompted and never reaches the HSM; an operator who
then gives up (CLR, too few shares) cancels the login: nothing is counted.  What only the
HSM can judge (a share of another keyset mixed into an M of N read, a wrong PED PIN) is a
counted failure, and a good login afterwards resets the count.

The device-level refusals are tested in ``tests/ped/device/test_script_operator.py`` and
the engine's counting in ``tests/hsm/test_engine_thresholds.py``; this file runs them end
to end through ``pedhsm`` (the shell, the daemon, the PED process).
"""

from __future__ import annotations

import shutil

from tests.hsm.emulated import Script, step
from tests.hsm.test_daemon import Shell

PIN = "97531"


def _imprint_2_of_3(s: Script, blanks: list[str]) -> None:
    s.parts.append(step("Reuse an existing", press="NO"))
    s.parts.append(step("M value", pin="2"))
    s.parts.append(step("N value", pin="3"))
    s.parts.append(step("New PED PIN", pin=PIN))
    s.parts.append(step("Confirm new PED PIN", pin=PIN))
    s.parts.append(step("duplicating", press="NO"))
    for blank in blanks:
        s.parts.append(step("Insert a blank key", insert=blank))


def _attempts_left(shell: Shell) -> str:
    out = shell.ok("hsm", "show")
    return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                if "SO login attempts left" in line)


def _tamper(shell: Shell, name: str, target: str) -> None:
    """A copy of the SO key's first share with one byte of its secret share changed."""
    data = bytearray((shell.keys / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (shell.keys / target).write_bytes(bytes(data))


def test_key_refusals_and_counted_failures_through_pedhsm(shell: Shell) -> None:
    b = shell.blanks
    so, red, blank = b[0:3], b[3], b[4]
    stranger = shell.extra["stranger"]
    tampered = "tampered.pedkey"
    s = Script()
    s.session()
    _imprint_2_of_3(s, so)  # hsm init: the SO key, 2 of 3 with a PED PIN ...
    s.imprint(red)  # ... and the red domain key
    # Login 1: every refusal the PED makes by itself, then the operator gives up with
    # one share of two: cancelled, not counted.
    s.session()
    s.parts.append(step("Insert a BLUE PED key", insert=red))
    s.parts.append(step("Wrong colour: RED key", insert=blank))
    s.parts.append(step("Key is blank", insert=tampered))
    s.parts.append(step("Key unreadable", insert=so[0]))
    s.parts.append(step("Enter PED PIN", pin=PIN))
    s.parts.append(step("Key 2 of 2", insert=so[0]))  # the same share again
    s.parts.append(step("Key already read", press="CLR"))  # too few shares: give up
    # Login 2: a share of another keyset mixed in as the second share: counted.
    s.session()
    s.parts.append(step("Insert a BLUE PED key", insert=so[1]))
    s.parts.append(step("Enter PED PIN", pin=PIN))
    s.parts.append(step("Key 2 of 2", insert=stranger))
    # Login 3: the right shares, a wrong PED PIN: counted.
    s.session()
    s.parts.append(step("Insert a BLUE PED key", insert=so[2]))
    s.parts.append(step("Enter PED PIN", pin="13579"))
    s.parts.append(step("Key 2 of 2", insert=so[0]))
    # Login 4: right: the count goes back to zero.
    s.session()
    s.parts.append(step("Insert a BLUE PED key", insert=so[1]))
    s.parts.append(step("Enter PED PIN", pin=PIN))
    s.parts.append(step("Key 2 of 2", insert=so[2]))
    s.write(shell.script)
    shell.start()
    shell.ok("hsm", "init", "--label", "keys")
    _tamper(shell, so[0], tampered)
    assert _attempts_left(shell) == "3"

    code, out, err = shell.run("hsm", "login")
    assert code == 1 and "Please attend to the PED." in out
    assert "cancelled on the PED (CLR)" in err and "login failed" not in err, err
    assert _attempts_left(shell) == "3"

    code, _, err = shell.run("hsm", "login")
    assert code == 1 and "another keyset" in err and "1 consecutive failure(s) of 3" in err, err
    assert _attempts_left(shell) == "2"

    code, _, err = shell.run("hsm", "login")
    assert code == 1 and "2 consecutive failure(s) of 3" in err, err
    assert _attempts_left(shell) == "1"

    assert "HSM SO logged in." in shell.ok("hsm", "login")
    assert _attempts_left(shell) == "3"
    log = (shell.home / "pedhsm.log").read_text(errors="replace")
    for word in ("wrong-colour", "blank", "unreadable", "already-read"):
        assert "key-refused blue" in log and word in log, word
    assert PIN not in log and "13579" not in log
    shutil.rmtree(shell.keys / tampered, ignore_errors=True)
    shell.ok("mode", "stop")
