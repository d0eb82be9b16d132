"""pedclient's command line: no mode, help, Luna spellings, config, real start/show/stop."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from ped.daemon.config import load_config
from pedclient.cli import main
from pedclient.settings import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pedclient", *argv], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_no_mode_says_so():
    result = cli()
    assert result.returncode == 2
    assert result.stderr.startswith("You must specify a mode.")
    assert "start, stop, show, config" in result.stderr
    code, _, err = run("-mode")
    assert code == 2 and "You must specify a mode." in err


def test_help(capsys):
    assert main(["mode", "start", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--home", "--config", "--foreground", "--idle-timeout"):
        assert option in text


def test_config(home):
    assert run("-mode", "config", "-set", "idle_timeout", "600", "-home", str(home))[0] == 0
    assert load_config(home / "config.toml", SCHEMA) == {"idle_timeout": 600}
    code, out, _ = run("mode", "config", "--show", "--home", str(home))
    assert code == 0 and "idle_timeout" in out and "600" in out
    code, _, err = run("mode", "config", "--set", "idle_timeout", "0", "--home", str(home))
    assert code == 1 and "between 1 and 99999" in err


def test_real_start_show_stop(home, monkeypatch):
    monkeypatch.setenv("PEDCLIENT_HOME", str(home))  # the env var picks the home
    started = subprocess.run([sys.executable, "-m", "pedclient", "-mode", "start",
                              "-idletimeout", "300"], capture_output=True, text=True,
                             timeout=60, cwd=ROOT, env=os.environ.copy())
    try:
        assert started.returncode == 0, started.stderr
        assert str(home / "pedclient.sock") in started.stdout
        endpoint = home / "pedclient.sock"
        assert stat.S_IMODE(endpoint.stat().st_mode) == 0o600
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        shown = cli("mode", "show", "--home", str(home))
        assert shown.returncode == 0
        assert "Idle timeout:             300 s" in shown.stdout
        assert "Links open:               0" in shown.stdout
        data = json.loads(cli("mode", "show", "--json", "--home", str(home)).stdout)
        assert data["running"] and data["socket"] == str(endpoint)
    finally:
        stopped = cli("mode", "stop", "--home", str(home))
    assert stopped.returncode == 0 and "pedclient stopped." in stopped.stdout
    assert not (home / "pedclient.sock").exists()
    shown = cli("mode", "show", "--home", str(home))
    assert shown.returncode == 3 and "not running" in shown.stdout
