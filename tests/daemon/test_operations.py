"""The programs as an operator runs them for years: the pid lock, owner-only files, log
rotation and JSON logs, ``--version``, exit codes, read-only commands, systemd's
readiness notification.  Real processes in a scratch home."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROGRAMS = ("pedserver", "pedclient", "pedhsm", "pedkey", "pedemu", "hsmclient")


def run(prog: str, *argv: object, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed console program *prog*, in its own process."""
    return subprocess.run([str(BIN / prog), *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)  # a usual login umask: files 0644 unless made otherwise
    try:
        yield
    finally:
        os.umask(old)


def wait_until(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("prog", PROGRAMS)
def test_version_on_every_command(prog):
    done = run(prog, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{prog} ") and "Remote PED" in done.stdout


@pytest.mark.parametrize("argv", [
    ("pedserver", "mode", "start", "--port", "70000", "--device", "usb"),
    ("pedserver", "-mode", "start", "-port", "70000", "-device", "usb"),
    ("pedserver", "mode", "start", "--idle-timeout", "0", "--device", "usb"),
    ("pedserver", "mode", "start", "--no-such-option"),
    ("pedclient", "mode", "start", "--socket-read-rsp-timeout", "1"),
    ("pedclient", "mode", "start", "--peer-listen", "--port", "70000"),
    ("pedhsm", "hsm", "no-such-command"),
    ("pedkey", "blank", "--count", "0", "--dir", "x"),
    ("pedemu", "--keyring", "x"),
])
def test_a_bad_command_line_exits_2(home, argv):
    prog, *rest = argv
    done = run(prog, *rest, "--home", home / "h") if prog in ("pedserver", "pedclient") \
        else run(prog, *rest)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not (home / "h").exists()  # and nothing was started or created


@pytest.mark.parametrize("foreground", [False, True])
@pytest.mark.parametrize("uri", ["emulated:/missing/keys", "bogus:x", "usb:zz", "emulated:"])
def test_a_device_that_can_never_work_fails_start_with_1(home, uri, foreground):
    done = run("pedserver", "mode", "start", "--home", home, "--port", 0, "--device", uri,
               *(["--foreground"] if foreground else []))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "could not start" in done.stderr or uri in done.stderr
    assert not (home / "pedserver.pid").exists()


@pytest.mark.parametrize("prog", ["pedserver", "pedclient"])
@pytest.mark.parametrize("argv", [("mode", "show"), ("mode", "show", "--json"),
                                  ("mode", "stop"), ("mode", "config", "--show")])
def test_read_only_commands_create_nothing(home, prog, argv):
    typo = home / "TYPO"
    done = run(prog, *argv, "--home", typo)
    assert done.returncode in (0, 3), done.stderr
    assert not typo.exists()


def test_a_daemon_an_operator_runs_for_years(home, umask_022):
    """Stale pid file of a live process, 0600 files, JSON log lines, SIGHUP rotation."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A pid file left by kill -9 whose number now belongs to another live process.
        (home / "pedserver.pid").write_text(f"{sleeper.pid}\n")
        start = ("pedserver", "mode", "start", "--home", home, "--port", 0, "--ip",
                 "127.0.0.1", "--device", f"socket:{home}/ped.sock", "--log-format", "json")
        done = run(*start)
        assert done.returncode == 0, done.stderr
        pid = int((home / "pedserver.pid").read_text())
        assert pid != sleeper.pid
        again = run(*start)
        assert again.returncode == 1 and f"already running (pid {pid}" in again.stderr
        assert "`pedserver mode stop` first" in again.stderr

        log = home / "pedserver.log"
        assert log.stat().st_mode & 0o777 == 0o600
        assert (home / "pedserver.pid").stat().st_mode & 0o777 == 0o600
        wait_until(lambda: "listening" in log.read_text(), "the listening line")
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        assert any(e["logger"] == "pedserver" and "listening" in e["message"] for e in entries)

        os.rename(log, home / "pedserver.log.1")  # logrotate, then its postrotate:
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: log.exists() and "reopened" in log.read_text(), "a new log file")
        assert log.stat().st_mode & 0o777 == 0o600
        assert run("pedserver", "mode", "show", "--home", home).returncode == 0  # still up

        assert run("pedserver", "certificate", "export", home / "me.pem",
                   "--home", home).returncode == 0
        done = run("pedserver", "appliance", "register", "--name", "hsm1", "--certificate",
                   home / "me.pem", "--ip", "127.0.0.1", "--home", home)
        assert done.returncode == 0, done.stderr
        assert (home / "pins.sqlite3").stat().st_mode & 0o777 == 0o600

        assert run("pedserver", "mode", "stop", "--home", home).returncode == 0
        assert not (home / "pedserver.pid").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pedhsm_logs_json_at_debug_owner_only_and_reopens_at_sighup(home, umask_022):
    """pedhsm has the relays' log options: --log-level, --log-format json, SIGHUP rotation."""
    done = run("pedhsm", "mode", "start", "--home", home, "--pedclient", home / "none.sock",
               "--log-level", "debug", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    try:
        pid = int((home / "pedhsm.pid").read_text())
        log = home / "pedhsm.log"
        assert log.stat().st_mode & 0o777 == 0o600
        wait_until(lambda: "serving on" in log.read_text(), "pedhsm's serving line")
        entries = [json.loads(line) for line in log.read_text().splitlines() if line]
        assert any(e["logger"] == "pedhsm" and "serving on" in e["message"] for e in entries)
        os.rename(log, home / "pedhsm.log.1")
        os.kill(pid, signal.SIGHUP)  # what logrotate's postrotate sends
        wait_until(lambda: log.exists() and "reopened" in log.read_text(), "a new log file")
        assert log.stat().st_mode & 0o777 == 0o600
        assert run("pedhsm", "mode", "show", "--home", home).returncode == 0  # still up
    finally:
        run("pedhsm", "mode", "stop", "--home", home)


def test_pedhsm_offers_the_log_options_the_relays_do():
    from hsm import shellparser
    from ped.daemon.config import LOG_LEVELS
    from ped.daemon.logs import LOG_FORMATS

    assert shellparser.LOG_LEVELS == LOG_LEVELS and shellparser.LOG_FORMATS == LOG_FORMATS


def test_systemd_readiness_from_a_foreground_daemon(home):
    """``Type=notify``: READY=1 once serving, STOPPING=1 when stopped, on a real socket."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify.sock"))
    notify.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=str(home / "notify.sock"))
    proc = subprocess.Popen(
        [str(BIN / "pedclient"), "mode", "start", "--foreground", "--home", str(home)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )
    try:
        ready = notify.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1"
        assert ready[1].startswith("STATUS=") and "pedclient.sock" in ready[1]
        assert (home / "control.sock").exists()  # ready means serving
        proc.send_signal(signal.SIGTERM)
        stopping = notify.recv(4096).decode().split("\n")
        assert stopping[0] == "STOPPING=1" and "SIGTERM" in stopping[1]
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
        notify.close()
