"""The shell's "time waited" line on a terminal while a command waits for the PED.

A command such as ``hsm init`` or ``hsm ped connect`` can wait minutes for a person at
the PED.  On a terminal the shell keeps one line that counts the seconds waited, and
prints each progress line from the HSM above it (the counting line is cleared first, so
the lines stay clean); off a terminal (a script, a log) nothing but the progress lines
is written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TextIO

CLEAR_LINE = "\r\x1b[K"


class WaitClock:
    """Progress lines for *out*, with a ticking "waited N s" line when *out* is a terminal."""

    def __init__(
        self,
        out: TextIO,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._shown = False
        self._thread: threading.Thread | None = None
        self.ticking = out.isatty()

    def __enter__(self) -> WaitClock:
        if self.ticking:
            self._thread = threading.Thread(target=self._run, name="pedhsm-wait", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._clear()
            self._out.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.tick()

    def _clear(self) -> None:
        if self._shown:
            self._out.write(CLEAR_LINE)
            self._shown = False

    def tick(self) -> None:
        """Rewrite the counting line (terminals only)."""
        if not self.ticking:
            return
        waited = int(self._clock() - self._started)
        with self._lock:
            self._out.write(f"{CLEAR_LINE}  ... waited {waited} s for the command to finish")
            self._out.flush()
            self._shown = True

    def line(self, text: str) -> None:
        """Print one progress line (above the counting line)."""
        with self._lock:
            self._clear()
            self._out.write(text + "\n")
            self._out.flush()
