"""Kill pedhsm with SIGKILL at random points of a run of failed and successful logins.

The HSM's local PED is the emulated PED in local mode with a script operator (no PINs:
scrypt is slow), as in ``tests/hsm/test_daemon.py``, whose `Shell` starts, stops and
kills the real daemon.  Each daemon life ("epoch") gets a fresh script for the PED
operations planned in it, because every start spawns a new PED process that runs its
script from the first step.

What the test knows, and checks after every kill (before and after the next start):

* ``floor``: failed HSM SO logins that the shell *reported* as failed since the last
  attempt that presented the right key (reported or interrupted: an interrupted right
  key may have reset the counter).  The daemon counts an attempt before it tries the
  secret, so after a kill its counter may be one higher than ``floor`` per interrupted
  wrong attempt, never lower;
* the HSM SO threshold is 3: once ``floor`` reaches 3, or the test saw the HSM zeroized,
  it stays zeroized until the test initialises it again (zeroization is never undone);
  an init that the kill cut short may or may not have committed, and the state after the
  restart says which (initialised: it did, with the new SO key), before this is checked;
* the state database passes ``PRAGMA integrity_check`` and the daemon starts again.
"""

from __future__ import annotations

import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import attrs

from keys.colors import Color
from tests.hsm.test_daemon import Shell

SO_THRESHOLD = 3


@attrs.define
class Op:
    kind: str  # "init", "good", "bad"
    blue: str = ""  # init: the blank that becomes the SO key
    red: str = ""


@attrs.define
class Outcome:
    op: Op
    finished: bool  # the shell got an answer before the kill
    code: int | None
    err: str


def integrity(db: Path) -> str:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


class Crasher:
    def __init__(self, shell: Shell, rng: random.Random) -> None:
        self.shell = shell
        self.rng = rng
        self.blanks = list(shell.blanks)
        self.stranger = shell.extra["stranger"]
        self.so_key: str | None = None  # the SO key of the current initialisation
        self.pending_init: Op | None = None  # an init that was interrupted
        self.floor = 0
        self.must_be_zeroized = True  # a new HSM is zeroized (not initialised)
        self.kills = 0
        self.logins = {"good": 0, "bad": 0}
        self.interrupted = 0  # operations the kill cut short
        self.zeroizations = 0  # times the test saw the HSM zeroized by failures
        self.durations: list[float] = []  # seconds of the operations not killed

    # ---------------------------------------------------------------- observation
    def state(self) -> tuple[str, int]:
        out = self.shell.ok("hsm", "show")
        state = _field(out, "HSM state:")
        left = _field(out, "SO login attempts left:")
        return state, int(left) if left.isdigit() else 0

    def check(self) -> str:
        """The invariants after a (re)start; returns the HSM state."""
        state, left = self.state()
        if self.pending_init is not None:
            # An init the kill cut short either committed (the HSM is initialised with its
            # keys, no failure counted yet) or did not (still zeroized): both are right, so
            # settle which before the zeroization invariant is checked.
            if state != "zeroized":
                self.so_key = self.pending_init.blue
                self.must_be_zeroized = False
                self.floor = 0
            self.pending_init = None
        if self.must_be_zeroized or self.floor >= SO_THRESHOLD:
            assert state == "zeroized", (state, self.floor, "zeroization was undone")
        if state == "zeroized":
            if not self.must_be_zeroized or self.floor:
                self.zeroizations += 1
            self.must_be_zeroized = True
            self.floor = 0
            self.so_key = None
            return state
        counted = SO_THRESHOLD - left
        assert counted >= self.floor, (
            f"the failure counter lost an attempt: {counted} counted, "
            f"{self.floor} reported failed"
        )
        return state

    # ---------------------------------------------------------------- planning
    def plan(self, state: str) -> list[Op]:
        ops: list[Op] = []
        if state == "zeroized":
            blue, red = self.blanks.pop(0), self.blanks.pop(0)
            ops.append(Op("init", blue, red))
            running = 0
        else:
            running = SO_THRESHOLD - self.state()[1]
        for _ in range(self.rng.randint(1, 3)):
            if self.rng.random() < 0.65 and running < SO_THRESHOLD:
                ops.append(Op("bad"))
                running += 1
                if running == SO_THRESHOLD:
                    break  # the HSM zeroizes: no PED operation may follow in this epoch
            else:
                ops.append(Op("good"))
                running = 0
        return ops

    def script_for(self, ops: list[Op]) -> None:
        s = self.shell.new_script()
        key = self.so_key
        for op in ops:
            if op.kind == "init":
                s.session().imprint(op.blue).imprint(op.red)
                key = op.blue
            else:
                assert key is not None
                s.session().read(Color.BLUE, key if op.kind == "good" else self.stranger)
        s.write(self.shell.script)

    # ---------------------------------------------------------------- running
    def run_op(self, op: Op, kill_after: float | None) -> Outcome:
        argv = [sys.executable, "-m", "hsm.cli", "--home", str(self.shell.home), "hsm"]
        argv += ["init", "--label", "crash"] if op.kind == "init" else ["login"]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kill_after is not None:
            time.sleep(kill_after)
            finished = proc.poll() is not None
            self.shell.kill9()
            self.kills += 1
        _, err = proc.communicate(timeout=60)
        if kill_after is None:
            finished = True
            self.durations = [*self.durations[-19:], time.monotonic() - started]
        elif not finished:
            # It may have got its answer in the instant before the kill.
            finished = proc.returncode == 0 or "failure(s) of" in err
        return Outcome(op, finished, proc.returncode, err)

    def account(self, outcome: Outcome) -> None:
        op = outcome.op
        self.interrupted += not outcome.finished
        if op.kind == "init":
            if outcome.finished:
                assert outcome.code == 0, outcome.err
                self.so_key, self.pending_init = op.blue, None
                self.must_be_zeroized = False
                self.floor = 0
            else:
                self.pending_init = op
            return
        if op.kind == "good":
            self.floor = 0  # reported or not, the right key may have reset the count
            if outcome.finished:
                self.logins["good"] += 1
                assert outcome.code == 0, outcome.err
            return
        if outcome.finished:
            self.logins["bad"] += 1
            assert outcome.code == 1, outcome.err
            self.floor += 1
            if "has been ZEROIZED" in outcome.err:
                # The third counted failure (an interrupted one may have been counted
                # before it): the HSM says so, and must stay zeroized from now on.
                assert "failed 3 times in a row" in outcome.err, outcome.err
                self.must_be_zeroized = True
            else:
                found = re.search(r"(\d+) consecutive failure\(s\) of 3", outcome.err)
                assert found, outcome.err
                # The daemon's own count as it answered: never below what we know.
                assert int(found.group(1)) >= self.floor, (outcome.err, self.floor)
                assert self.floor < SO_THRESHOLD, "the third failure did not zeroize"

    def kill_window(self) -> float:
        """Kills fall in 0..1.5 times the usual length of an operation (a whole `pedhsm`
        process): most of them cut one short at a random point, some land just after,
        on a fast machine as on a slow one."""
        if not self.durations:
            return 1.2
        return 1.5 * statistics.median(self.durations)

    def epoch(self, *, kill: bool = True) -> None:
        state = self.check()
        ops = self.plan(state)
        self.script_for(ops)  # the PED reads its script at its first operation
        victim = self.rng.randrange(len(ops)) if kill else None
        for i, op in enumerate(ops):
            kill_after = self.rng.uniform(0.0, self.kill_window()) if i == victim else None
            outcome = self.run_op(op, kill_after)
            self.account(outcome)
            if kill_after is not None:
                break
        else:
            return
        db = self.shell.home / "state.db"
        assert integrity(db) == "ok"
        self.shell.start()  # the daemon starts again after the kill


def _field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.strip().startswith(name):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name!r} not in {text!r}")
