"""Home directory resolution and logs that never carry payload bytes."""

from __future__ import annotations

import io
import logging
import os

import pytest

from ped.daemon.home import HomeError, default_home, resolve_home
from ped.daemon.logs import setup_logging


def test_home_precedence(home, monkeypatch):
    monkeypatch.setenv("PEDSERVER_HOME", str(home / "env"))
    assert resolve_home(home / "flag", "pedserver") == home / "flag"
    assert resolve_home(None, "pedserver") == home / "env"
    assert (home / "env").stat().st_mode & 0o777 == 0o700
    monkeypatch.delenv("PEDSERVER_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    if os.geteuid() != 0:
        assert default_home("pedserver") == home / "state" / "remote-ped" / "pedserver"
    else:
        assert str(default_home("pedserver")) == "/var/lib/remote-ped/pedserver"


def test_unsafe_home_is_refused(home):
    shared = home / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(HomeError, match="chmod go-w"):
        resolve_home(shared, "pedserver")
    afile = home / "file"
    afile.write_text("")
    with pytest.raises(HomeError, match="not a directory"):
        resolve_home(afile, "pedserver", create=False)


def test_logs_scrub_bytes_and_control_characters(home):
    stream = io.StringIO()
    log = setup_logging("pedtest", stream=stream, level="DEBUG")
    secret = bytes(range(200, 232))
    log.debug("frame %s and %r", secret, bytearray(secret))
    log.info("peer said %s", "evil\nFORGED LINE")
    text = stream.getvalue()
    assert "<32 bytes>" in text and secret.hex() not in text and "\\xc8" not in text
    assert "evil\\x0aFORGED LINE" in text
    assert text.count("\n") == 2  # one line per event, whatever the peer sent
    logging.getLogger().handlers.clear()


def test_log_file_is_owner_only(home):
    setup_logging("pedtest", log_file=home / "x.log")
    logging.getLogger("pedtest").warning("hello")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert (home / "x.log").stat().st_mode & 0o777 == 0o600
    assert "hello" in (home / "x.log").read_text()
    logging.getLogger().handlers.clear()
