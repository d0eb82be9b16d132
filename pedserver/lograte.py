"""Repeated log lines, summarised: a flood of one kind of line becomes one line per interval.

Anyone who can reach pedserver's port can make it log (a refused connection, a bad
hello): unbounded, that fills the disk and buries the lines that matter.  `RepeatedLines`
writes the first ``burst`` lines of each *kind* in an interval and counts the rest; when
the interval is over (at the next line of that kind, or at the latest from `run`) it
writes one summary line with the count.  The clock is trio's, so tests run it on a fake
clock.
"""

from __future__ import annotations

import logging

import attrs
import trio


@attrs.define
class _Kind:
    since: float
    written: int = 0
    held_back: int = 0


class RepeatedLines:
    """Writes lines through *logger*, at most *burst* of one kind per *interval* seconds."""

    def __init__(self, logger: logging.Logger, *, interval: float, burst: int) -> None:
        self._log = logger
        self.interval = interval
        self.burst = burst
        self._kinds: dict[str, _Kind] = {}

    def log(self, kind: str, level: int, text: str, *args: object) -> None:
        """Write ``text % args`` at *level*, unless *kind* already had its burst in this
        interval (then it is only counted for the summary line)."""
        now = trio.current_time()
        state = self._kinds.get(kind)
        if state is None:
            state = self._kinds[kind] = _Kind(now)
        elif now - state.since >= self.interval:
            self._summarise(kind, state)
            state.since, state.written = now, 0
        if state.written < self.burst:
            state.written += 1
            self._log.log(level, text, *args)
        else:
            state.held_back += 1

    def flush(self) -> None:
        """Write the summary of every kind whose interval is over; forget quiet kinds."""
        now = trio.current_time()
        for kind, state in list(self._kinds.items()):
            if now - state.since < self.interval:
                continue
            if state.held_back:
                self._summarise(kind, state)
                state.since, state.written = now, 0
            else:
                del self._kinds[kind]

    async def run(self) -> None:
        """Flush every interval until cancelled, so that a flood that stops is still
        summarised; the last counts are written when cancelled."""
        try:
            while True:
                await trio.sleep(self.interval)
                self.flush()
        finally:
            for kind, state in self._kinds.items():
                self._summarise(kind, state)
            self._kinds.clear()

    def _summarise(self, kind: str, state: _Kind) -> None:
        if state.held_back:
            self._log.warning(
                "%d more '%s' line(s) not written in the last %.0f s (repeated lines are "
                "summarised)", state.held_back, kind, trio.current_time() - state.since,
            )
            state.held_back = 0
