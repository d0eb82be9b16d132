"""Logs an operator can keep for years: owner-only files from creation, JSON lines,
reopened after rotation."""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import textwrap

import pytest

from ped.daemon.logs import reopen_logs, setup_logging
from ped.daemon.process import start_background


@pytest.fixture
def umask_022():
    old = os.umask(0o022)  # a usual login umask: files 0644 unless made otherwise
    try:
        yield
    finally:
        os.umask(old)


def test_the_background_log_is_owner_only_from_creation(home, umask_022):
    child = home / "child.py"
    child.write_text(textwrap.dedent("""
        import sys, time
        from ped.daemon.process import notify_ready
        print("early output, before logging is set up", file=sys.stderr, flush=True)
        notify_ready()
        time.sleep(30)
    """))
    proc = start_background([sys.executable, str(child)], log_path=home / "d.log")
    try:
        assert (home / "d.log").stat().st_mode & 0o777 == 0o600
        assert "early output" in (home / "d.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_json_lines_are_scrubbed_like_text(home):
    stream = io.StringIO()
    log = setup_logging("pedtest", stream=stream, level="DEBUG", log_format="json")
    secret = bytes(range(200, 232))
    log.debug("frame %s and %r", secret, bytearray(secret))
    log.info("peer said %s", "evil\nFORGED LINE")
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("handler failed")
    logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # one JSON object a line, whatever the peer sent
    entries = [json.loads(line) for line in lines]
    assert entries[0]["message"] == "frame <32 bytes> and '<32 bytes>'"
    assert entries[0]["level"] == "DEBUG" and entries[0]["logger"] == "pedtest"
    assert entries[0]["time"].endswith("Z")
    assert entries[1]["message"] == "peer said evil\\x0aFORGED LINE"
    assert entries[2]["exception"] == "ValueError: broken"
    assert secret.hex() not in stream.getvalue()


def test_reopen_after_rotation_starts_a_new_owner_only_file(home, umask_022):
    log = setup_logging("pedtest", log_file=home / "x.log")
    log.warning("before rotation")
    os.rename(home / "x.log", home / "x.log.1")  # what logrotate does
    log.warning("after rename, before reopen")
    assert reopen_logs() == 1
    log.warning("after reopen")
    for handler in logging.getLogger().handlers:
        handler.flush()
    logging.getLogger().handlers.clear()
    old = (home / "x.log.1").read_text()
    new = (home / "x.log").read_text()
    assert "before rotation" in old and "after rename, before reopen" in old
    assert "after reopen" in new and "before" not in new
    assert (home / "x.log").stat().st_mode & 0o777 == 0o600
