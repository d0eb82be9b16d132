"""Logging for the daemons: one line per event, and never a payload byte.

`setup_logging` sends records to a file in the daemon's home (or stderr in the
foreground).  Its formatter replaces any ``bytes``/``bytearray``/``memoryview`` argument
with ``<N bytes>`` before formatting, so even a careless ``log.debug("%s", payload)``
cannot write relayed frames or secrets to disk; control characters are escaped so that
text from a peer cannot forge log lines.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _escape(text: str, keep: str = "") -> str:
    """*text* with every unprintable character (but those in *keep*) as ``\\xNN``."""
    if text.isprintable():  # the common case, checked in C: nothing to escape
        return text
    return "".join(ch if ch.isprintable() or ch in keep else f"\\x{ord(ch):02x}" for ch in text)


def _scrub(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return _escape(value)  # a peer's text cannot start a forged log line
    if isinstance(value, BaseException):
        return _escape(str(value))
    return value


class SafeFormatter(logging.Formatter):
    """Formats without payload bytes and with control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, dict):
            record.args = {k: _scrub(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(_scrub(a) for a in record.args)
        if isinstance(record.msg, bytes | bytearray | memoryview):
            record.msg = _scrub(record.msg)
        record.exc_text = None
        return _escape(super().format(record), keep="\n")  # (a traceback has lines)

    def formatException(self, ei: Any) -> str:
        # Tracebacks can show local values in some hooks; keep type and message only.
        exc = ei[1]
        return f"  {type(exc).__name__}: {exc}" if exc is not None else ""


def setup_logging(
    name: str,
    *,
    log_file: str | os.PathLike[str] | None = None,
    level: str | int = "INFO",
    stream: Any = None,
) -> logging.Logger:
    """Configure the root logger for daemon *name*; returns the daemon's logger.

    *log_file* appends to a file (0600); otherwise *stream* (default stderr) is used.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    if log_file is not None:
        path = Path(log_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    _skip_unused_record_fields()
    return logging.getLogger(name)


def _skip_unused_record_fields() -> None:
    """FORMAT shows no thread, process or source line: do not collect them per record.

    These are the switches the logging documentation gives for this ("Optimization"):
    they save a stack walk and a getpid() system call on every line a daemon logs.
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
