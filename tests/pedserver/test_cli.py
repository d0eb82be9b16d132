"""pedserver's command line: help, Luna spellings, config precedence, show/stop."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ped.daemon.config import load_config
from pedserver.cli import main
from pedserver.settings import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console program, in its own process."""
    return subprocess.run([sys.executable, "-m", "pedserver", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_mode_lists_the_modes():
    for argv in ([], ["mode"], ["-mode"]):
        code, _, err = run(*argv)
        assert code == 2
        assert "You must specify a mode." in err
        assert "start, stop, show, config" in err


def test_luna_appliance_register_needs_the_address(capsys):
    # Peer-to-peer commands are tested in tests/p2p; here only the Luna spelling's parse.
    code, _, _ = run("-appliance", "register", "-name", "hsm1", "-certificate", "x.pem")
    assert code == 2 and "--ip" in capsys.readouterr().err


def test_help(capsys):
    assert main(["--help"]) == 0
    assert "mode" in capsys.readouterr().out
    assert main(["mode", "start", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--ip", "--port", "--device", "--home", "--config", "--foreground",
                   "--idle-timeout", "--socket-read-rsp-timeout"):
        assert option in text


def test_config_create_set_show_with_luna_spellings(home):
    code, out, _ = run("-mode", "config", "-create", "-home", str(home))
    assert code == 0 and "default configuration" in out
    code, out, _ = run("-mode", "config", "-set", "port", "1600", "-home", str(home))
    assert code == 0 and "restarted" in out
    code, out, _ = run("mode", "config", "--set", "idle-timeout", "900", "--home", str(home))
    assert code == 0
    assert load_config(home / "config.toml", SCHEMA) == {
        **SCHEMA.defaults(), "port": 1600, "idle_timeout": 900}
    code, out, _ = run("-mode", "config", "-show", "-home", str(home))
    assert code == 0
    assert "port" in out and "1600" in out and "(file)" in out
    code, _, err = run("mode", "config", "--set", "port", "99999", "--home", str(home))
    assert code == 1 and "between 0 and 65535" in err
    code, _, err = run("mode", "config", "--set", "colour", "blue", "--home", str(home))
    assert code == 1 and "unknown config key 'colour'" in err
    code, out, _ = run("mode", "config", "--create", "--home", str(home))
    assert "config.toml.bak" in out and (home / "config.toml.bak").exists()


def test_start_needs_a_valid_config(home):
    (home / "config.toml").write_text("port = 'high'\n")
    code, _, err = run("mode", "start", "--home", str(home), "--device", "usb")
    assert code == 1 and "port must be an integer" in err


def test_show_and_stop_when_not_running(home):
    code, out, _ = run("mode", "show", "--home", str(home))
    assert code == 3 and "not running" in out
    code, out, _ = run("mode", "show", "--json", "--home", str(home))
    assert json.loads(out)["running"] is False
    code, out, _ = run("mode", "stop", "--home", str(home))
    assert code == 0 and "not running" in out


def test_real_background_start_show_stop_and_precedence(home):
    """The console program as a user runs it: it backgrounds, answers show, stops."""
    port = free_port()
    assert cli("mode", "config", "--set", "port", str(port), "--home", str(home)).returncode == 0
    assert cli("mode", "config", "--set", "idle_timeout", "55", "--home", str(home)
               ).returncode == 0
    started = cli("-mode", "start", "-ip", "127.0.0.1", "-idletimeout", "77",
                  "-socketreadrsptimeout", "300", "-device", f"socket:{home}/no-ped.sock",
                  "-home", str(home))
    try:
        assert started.returncode == 0, started.stderr
        assert f"listening on 127.0.0.1:{port}" in started.stdout
        shown = cli("mode", "show", "--home", str(home))
        assert shown.returncode == 0
        text = shown.stdout
        assert f"Port:                     {port}" in text  # from the config file
        assert "Idle timeout:             77 s" in text  # the command line beats the file
        assert "Socket read-rsp timeout:  300 s" in text
        assert "NOT connected" in text and "Hostname:" in text
        assert "Links open:               0" in text
        data = json.loads(cli("mode", "show", "--json", "--home", str(home)).stdout)
        assert data["running"] and data["device_connected"] is False
        again = cli("mode", "start", "--device", "usb", "--home", str(home))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stopped = cli("-mode", "stop", "-home", str(home))
    assert stopped.returncode == 0 and "pedserver stopped." in stopped.stdout
    assert cli("mode", "show", "--home", str(home)).returncode == 3
    assert not (home / "pedserver.pid").exists() and not (home / "control.sock").exists()
    log = (home / "pedserver.log").read_text()
    assert "listening on 127.0.0.1" in log and "stopping: mode stop" in log


def test_start_failure_is_reported_by_the_starting_command(home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("mode", "start", "--ip", "127.0.0.1", "--port", str(port), "--device",
                     "usb", "--home", str(home))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "pick another --port" in result.stderr


@pytest.mark.parametrize("uri", ["bogus:thing", "emulated:"])
def test_bad_device_uri(home, uri):
    result = cli("mode", "start", "--ip", "127.0.0.1", "--port", "0", "--device", uri,
                 "--home", str(home))
    assert result.returncode != 0 and "device URI" in result.stderr


def test_read_timeout_must_cover_keepalives(home):
    (home / "config.toml").write_text("keepalive_interval = 60\n")
    code, _, err = run("mode", "start", "--home", str(home), "--device", "usb",
                       "--socket-read-rsp-timeout", "100")
    assert code == 1 and "at least twice keepalive_interval" in err


def test_luna_config_set_option_form_and_reset(home):
    """Luna's `-mode config -set -idletimeout 900` (several at once) and `-reset`."""
    code, out, err = run("-mode", "config", "-set", "-idletimeout", "900", "-home", str(home))
    assert code == 0, err
    assert "Set idle_timeout = 900" in out
    code, out, err = run("-mode", "config", "-home", str(home), "-set",
                         "-socketreadrsptimeout", "300", "-port=1600")
    assert code == 0, err
    assert load_config(home / "config.toml", SCHEMA) == {
        "idle_timeout": 900, "socket_read_rsp_timeout": 300, "port": 1600}
    code, out, _ = run("-mode", "config", "-reset", "-home", str(home))
    assert code == 0 and "default configuration" in out
    assert load_config(home / "config.toml", SCHEMA) == SCHEMA.defaults()
    code, _, err = run("-mode", "config", "-set", "-colour", "blue", "-home", str(home))
    assert code == 1 and "unknown config key 'colour'" in err
    code, _, _ = run("-mode", "config", "-set", "-home", str(home))
    assert code == 2


def test_help_shows_the_luna_spellings(capsys):
    assert main(["mode", "config", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--reset" in text and "-set -idletimeout 900" in text
    assert main(["appliance", "--help"]) == 0
    assert "show" in capsys.readouterr().out
    assert main(["mode", "start", "--help"]) == 0
    assert "else usb" in " ".join(capsys.readouterr().out.split())


def test_luna_appliance_show_lists(home):
    code, out, err = run("-appliance", "show", "-home", str(home))
    assert code == 0, err
    assert "No appliances registered" in out


def test_start_without_device_uses_the_config_then_usb(home):
    """No --device: the config's device, else the USB PED (waited for, as Luna does)."""
    other = home / "o"
    socket_uri = f"socket:{home}/no-ped.sock"
    assert run("mode", "config", "--set", "device", socket_uri, "--home", str(home))[0] == 0
    for where, device in ((home, socket_uri), (other, "usb")):
        started = cli("-mode", "start", "-ip", "127.0.0.1", "-port", "0", "-home", str(where))
        try:
            assert started.returncode == 0, started.stderr
            data = json.loads(cli("mode", "show", "--json", "--home", str(where)).stdout)
            assert data["device"] == device and data["device_connected"] is False
        finally:
            assert cli("mode", "stop", "--home", str(where)).returncode == 0
