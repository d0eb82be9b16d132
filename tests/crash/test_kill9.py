"""Crash consistency of pedhsm: SIGKILL at random points of failed and successful logins.

See `tests.crash.harness` for what is checked after every kill: the failure counter
never loses an attempt, zeroization is never undone, the state database passes its
integrity check, and the daemon starts again.  The normal suite kills a handful of
times; the slow test at least 200 times.
"""

from __future__ import annotations

import random

import pytest

from keys import Keyring
from tests.crash.harness import Crasher
from tests.hsm.test_daemon import Shell


def _crasher(shell: Shell, seed: int, blanks: int) -> Crasher:
    shell.blanks += [p.name for p in Keyring(shell.keys).add_blanks(blanks)]
    crasher = Crasher(shell, random.Random(seed))
    shell.start()
    return crasher


def _run(crasher: Crasher, kills: int) -> None:
    while crasher.kills < kills:
        crasher.epoch()
    crasher.check()  # the last restart, checked too


def _exercised(crasher: Crasher) -> bool:
    """At least one login finished and at least one was interrupted by a kill."""
    return crasher.logins["good"] + crasher.logins["bad"] > 0 and crasher.interrupted > 0


def test_a_handful_of_kills_lose_nothing(shell: Shell) -> None:
    crasher = _crasher(shell, seed=9, blanks=70)  # about two per kill
    # Six kills, and more (up to 30) until both kinds of epoch happened: on a loaded
    # machine the first kills can all land before any login finishes.
    while crasher.kills < 6 or (not _exercised(crasher) and crasher.kills < 30):
        crasher.epoch()
    crasher.check()  # the last restart, checked too
    assert _exercised(crasher)


@pytest.mark.slow
def test_two_hundred_kills_lose_nothing(shell: Shell) -> None:
    crasher = _crasher(shell, seed=20261123, blanks=400)
    _run(crasher, kills=200)
    # the run really exercised both kinds of login, and zeroization
    assert crasher.logins["good"] > 10 and crasher.logins["bad"] > 10
    assert crasher.interrupted > 50 and crasher.zeroizations > 2
