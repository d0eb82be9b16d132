"""Logging for the daemons: one line per event, and never a payload byte.

`setup_logging` sends records to a file in the daemon's home (or stderr in the
foreground).  Its formatter replaces any ``bytes``/``bytearray``/``memoryview`` argument
with ``<N bytes>`` before formatting, so even a careless ``log.debug("%s", payload)``
cannot write relayed frames or secrets to disk; control characters are escaped so that
text from a peer cannot forge log lines.  ``--log-format json`` writes the same scrubbed
text as one JSON object per line.  The log file is created owner-only (0600) and
`reopen_logs` (on SIGHUP: logrotate's ``postrotate``) starts a new one after the old was
renamed, without losing a line or copying the file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
#: ``--log-format`` values: the text line above, or one JSON object per line.
LOG_FORMATS = ("text", "json")


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


def _scrub_record(record: logging.LogRecord) -> None:
    """Replace the record's payload arguments by their sizes, in place."""
    if isinstance(record.args, dict):
        record.args = {k: _scrub(v) for k, v in record.args.items()}
    elif record.args:
        record.args = tuple(_scrub(a) for a in record.args)
    if isinstance(record.msg, bytes | bytearray | memoryview):
        record.msg = _scrub(record.msg)
    record.exc_text = None


def _exception_text(ei: Any) -> str:
    # Tracebacks can show local values in some hooks; keep type and message only.
    exc = ei[1]
    return f"  {type(exc).__name__}: {exc}" if exc is not None else ""


class SafeFormatter(logging.Formatter):
    """Formats without payload bytes and with control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        _scrub_record(record)
        return _escape(super().format(record), keep="\n")  # (a traceback has lines)

    def formatException(self, ei: Any) -> str:
        return _exception_text(ei)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time, logger, level, message, exception), scrubbed as
    `SafeFormatter` scrubs: the same words, for a log collector."""

    def format(self, record: logging.LogRecord) -> str:
        _scrub_record(record)
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "logger": record.name,
            "level": record.levelname,
            "message": _escape(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = _escape(_exception_text(record.exc_info).strip())
        return json.dumps(entry, ensure_ascii=False)


def _iso_time(created: float) -> str:
    """UTC, ISO 8601 with milliseconds: ``2026-12-03T09:45:42.123Z``."""
    whole = int(created)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            + f".{int((created - whole) * 1000):03d}Z")


def make_formatter(log_format: str = "text") -> logging.Formatter:
    """The formatter for ``--log-format`` *log_format* (``text`` or ``json``)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return SafeFormatter(FORMAT)
    raise ValueError(f"unknown log format {log_format!r}; use text or json")


def open_owner_only(path: str | os.PathLike[str]) -> int:
    """A descriptor appending to *path*, created 0600 (whatever the umask) if absent."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


class ReopeningFileHandler(logging.StreamHandler[TextIO]):
    """Appends to a log file created 0600; `reopen` switches to a new file at the same
    path (the old one was renamed by logrotate).  With *capture_std*, stdout and stderr
    follow the log (a background daemon's crash output lands in the current file)."""

    def __init__(self, path: str | os.PathLike[str], *, capture_std: bool = False) -> None:
        self.path = Path(path)
        self.capture_std = capture_std
        super().__init__(self._open())

    def _open(self) -> TextIO:
        fd = open_owner_only(self.path)
        if self.capture_std:
            for std in (1, 2):
                os.dup2(fd, std)
        return os.fdopen(fd, "a", encoding="utf-8")

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.setStream(self._open())
            if old is not None:
                old.close()
        finally:
            self.release()

    def close(self) -> None:
        self.acquire()
        try:
            if self.stream is not None and not self.stream.closed:
                self.stream.close()
        finally:
            self.release()
        super().close()


def reopen_logs() -> int:
    """Reopen every log file of the root logger (after rotation); returns how many."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ReopeningFileHandler)]
    for handler in handlers:
        handler.reopen()
    return len(handlers)


def setup_logging(
    name: str,
    *,
    log_file: str | os.PathLike[str] | None = None,
    level: str | int = "INFO",
    stream: Any = None,
    log_format: str = "text",
    capture_std: bool = False,
) -> logging.Logger:
    """Configure the root logger for daemon *name*; returns the daemon's logger.

    *log_file* appends to a file (0600, reopened by `reopen_logs`; *capture_std* points
    stdout and stderr at it too); otherwise *stream* (default stderr) is used.
    *log_format* is ``text`` or ``json``.
    """
    formatter = make_formatter(log_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    if log_file is not None:
        handler: logging.Handler = ReopeningFileHandler(log_file, capture_std=capture_std)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
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
