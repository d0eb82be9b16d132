"""Waiting for a daemon's log line.

pedserver writes the line of a PED event (a key read, a handshake) on its next turn after
relaying the frames that came with it, so a test that has just received an answer may
look at the log a moment before the line is there.  Wait for it instead of sleeping.
"""

from __future__ import annotations

import os
import time

POLL_INTERVAL = 0.02


def wait_for_log(
    path: str | os.PathLike[str], text: str, *, count: int = 1, timeout: float = 30.0
) -> str:
    """Block until the log at *path* holds *text* at least *count* times; its contents.

    Raises `AssertionError` naming the text and the log when *timeout* seconds pass.
    For tests whose daemons are other processes (this sleeps the calling thread).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, encoding="utf-8", errors="replace") as log:
                contents = log.read()
        except FileNotFoundError:
            contents = ""
        if contents.count(text) >= count:
            return contents
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{text!r} appeared {contents.count(text)} time(s) in {path}, "
                f"not {count}, within {timeout:g} s"
            )
        time.sleep(POLL_INTERVAL)
