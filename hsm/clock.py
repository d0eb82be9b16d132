"""Wall-clock time for the HSM, injectable for tests.

The HSM needs wall-clock time (not trio's monotonic clock) for two rules that span a power
cycle: the auditor's 10-minute lockout and auto-activation's 2-hour limit.  Tests cannot
wait two hours, so the daemon reads its time from a file when the environment variable
``PEDHSM_TEST_CLOCK`` names one (a decimal number of seconds since the epoch, rewritten by
the test to move time).  Production never sets it; `mode show` reports when it is in use
so that nobody runs a real HSM on a fake clock unknowingly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

TEST_CLOCK_ENV = "PEDHSM_TEST_CLOCK"


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    fake = False

    def now(self) -> float:
        return time.time()


class FileClock:
    """Time read from a file on every call (tests only)."""

    fake = True

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> float:
        try:
            return float(self.path.read_text().strip())
        except (OSError, ValueError):
            return time.time()


class ManualClock:
    """In-process clock for unit tests."""

    fake = True

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def clock_from_env() -> SystemClock | FileClock:
    path = os.environ.get(TEST_CLOCK_ENV)
    return FileClock(Path(path)) if path else SystemClock()
