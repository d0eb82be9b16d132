"""hsmclient as an operator runs it: real processes in a scratch home.

``mode start/show/stop``, ``slot list``, a second start refused, a stale pid file and a
stale socket, owner-only files, JSON logs reopened at SIGHUP, read-only commands that
create nothing, a bad command line (exit 2), the systemd unit's own command line, and
the applications' socket answering p11-kit's client module (``pkcs11-tool -L``).

The daemon's backend is chosen through its test hook (``HSMCLIENT_TEST_BACKEND``, see
`hsmclient.daemon`): `tests.hsmclient.test_daemon.FakeBackend` for the servers and
slots, `soft_backend` below (pedtools' in-memory token) for a real PKCS#11 client.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hsmclient.cli import build_parser
from hsmclient.daemon import BACKEND_ENV
from hsmclient.slots import SlotMap
from ped.tls import PinStore
from tests.daemon.test_systemd_units import exec_start, service_section
from tests.hsmclient.conftest import require_p11_tools
from tests.hsmclient.test_daemon import FAKE, register
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def soft_backend(home: Path, pins: PinStore, slot_map: SlotMap) -> object:
    """The daemon's backend for a real PKCS#11 client: pedtools' in-memory token."""
    from pedtools.fakes.softtoken import SoftBackend

    return SoftBackend()


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


def env(backend: str = FAKE, **extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), **{BACKEND_ENV: backend}, **extra)


def hsmclient(*argv: object, environ: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "hsmclient"), *map(str, argv)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=environ or env())


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_start_show_slot_list_stop(home: Path) -> None:
    register(home, "hsm1", "down1")
    old = os.umask(0o022)
    try:
        done = hsmclient("mode", "start", "--home", home, "--log-format", "json")
    finally:
        os.umask(old)
    try:
        assert done.returncode == 0, done.stderr
        sock = home / "pkcs11.sock"
        assert f"P11_KIT_SERVER_ADDRESS=unix:path={sock}" in done.stdout
        pid = int((home / "hsmclient.pid").read_text())
        for name in ("hsmclient.pid", "hsmclient.log", "pkcs11.sock", "control.sock"):
            assert (home / name).stat().st_mode & 0o777 == 0o600, name

        again = hsmclient("mode", "start", "--home", home)
        assert again.returncode == 1
        assert f"already running (pid {pid}" in again.stderr

        show = hsmclient("mode", "show", "--home", home)
        assert show.returncode == 0, show.stderr
        assert f"hsmclient is running (pid {pid}, home {home})" in show.stdout
        assert f"    P11_KIT_SERVER_ADDRESS=unix:path={sock}" in show.stdout
        assert "Server hsm1 (127.0.0.1:1792): reachable, 2 partition(s)" in show.stdout
        assert "Server down1 (127.0.0.1:1793): server unreachable: connection refused" \
            in show.stdout
        info = json.loads(hsmclient("mode", "show", "--json", "--home", home).stdout)
        assert info["running"] and info["p11kit_address"].endswith(str(sock))

        slots = hsmclient("slot", "list", "--home", home)
        assert slots.returncode == 0, slots.stderr
        lines = slots.stdout.splitlines()
        assert lines[0].split() == ["Slot", "Label", "Serial", "Server", "State"]
        assert lines[1].split()[:5] == ["-", "-", "-", "down1", "server"]
        assert lines[2].split() == ["0", "app", "1001", "hsm1", "ready"]
        assert lines[3].split() == ["1", "web", "1002", "hsm1", "ready"]

        log = home / "hsmclient.log"
        wait_until(lambda: "listening for PKCS#11" in log.read_text(), "the listening line")
        entries = [json.loads(line) for line in log.read_text().splitlines() if line]
        assert any(e["logger"] == "hsmclient" and "P11_KIT_SERVER_ADDRESS" in e["message"]
                   for e in entries)
        os.rename(log, home / "hsmclient.log.1")  # logrotate, then its postrotate:
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: log.exists() and "reopened" in log.read_text(), "a new log file")
        assert log.stat().st_mode & 0o777 == 0o600
    finally:
        stop = hsmclient("mode", "stop", "--home", home)
    assert stop.returncode == 0 and "hsmclient stopped." in stop.stdout
    assert not (home / "hsmclient.pid").exists() and not (home / "pkcs11.sock").exists()
    assert hsmclient("mode", "show", "--home", home).returncode == 3


def test_a_stale_pid_file_and_socket_never_block_a_start(home: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = socket.socket(socket.AF_UNIX)
    try:
        (home / "hsmclient.pid").write_text(f"{sleeper.pid}\n")  # left by kill -9
        stale.bind(str(home / "app.sock"))  # a socket file nobody listens on
        done = hsmclient("mode", "start", "--home", home, "--socket", home / "app.sock")
        assert done.returncode == 0, done.stderr
        assert f"unix:path={home / 'app.sock'}" in done.stdout
        assert int((home / "hsmclient.pid").read_text()) != sleeper.pid
        assert hsmclient("mode", "show", "--home", home).returncode == 0
    finally:
        stale.close()
        hsmclient("mode", "stop", "--home", home)
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("argv", [("mode", "show"), ("mode", "show", "--json"),
                                  ("mode", "stop"), ("mode", "config", "--show")])
def test_read_only_commands_create_nothing(home: Path, argv: tuple[str, ...]) -> None:
    done = hsmclient(*argv, "--home", home / "TYPO")
    assert done.returncode in (0, 3), done.stderr
    assert not (home / "TYPO").exists()


@pytest.mark.parametrize("argv", [
    ("mode", "start", "--slot-query-timeout", "0"),
    ("mode", "start", "--no-such-option"),
    ("-mode", "start", "-slotquerytimeout", "9999"),
])
def test_a_bad_command_line_exits_2_and_starts_nothing(home: Path, argv: tuple[str, ...]
                                                       ) -> None:
    done = hsmclient(*argv, "--home", home / "h")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert not (home / "h").exists()


def test_the_home_comes_from_hsmclient_home(home: Path) -> None:
    done = hsmclient("certificate", "show", environ=env(HSMCLIENT_HOME=str(home / "env")))
    assert done.returncode == 0, done.stderr
    assert str(home / "env") in done.stdout


def test_the_systemd_unit(home: Path) -> None:
    service = service_section("hsmclient")
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"] and service["RestartPreventExitStatus"] == ["2"]
    assert service["UMask"] == ["0077"]
    argv = exec_start("hsmclient", home)
    args = build_parser().parse_args(argv[1:])
    assert args.foreground and Path(args.home) == home / "remote-ped" / "hsmclient"

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify.sock"))
    notify.settimeout(30)
    (home / "remote-ped" / "hsmclient").mkdir(mode=0o700, parents=True)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env(NOTIFY_SOCKET=str(home / "notify.sock")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = notify.recv(4096).decode().split("\n")
        assert ready[0] == "READY=1" and "pkcs11.sock" in ready[1]
        proc.send_signal(signal.SIGTERM)
        assert notify.recv(4096).split(b"\n")[0] == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_pkcs11_tool_lists_the_slots_through_p11_kit(home: Path) -> None:
    """The applications' socket speaks p11-kit RPC: Debian's client module lists slots."""
    module, tool = require_p11_tools()
    done = hsmclient("mode", "start", "--home", home,
                     environ=env("tests.hsmclient.test_daemon_process:soft_backend"))
    assert done.returncode == 0, done.stderr
    try:
        listing = subprocess.run(
            [tool, "--module", str(module), "-L"], capture_output=True,
            text=True, timeout=60,
            env=dict(os.environ, P11_KIT_SERVER_ADDRESS=f"unix:path={home / 'pkcs11.sock'}"))
        assert listing.returncode == 0, listing.stderr
        assert "Slot 0" in listing.stdout and "token label" in listing.stdout
        show = hsmclient("mode", "show", "--home", home)
        assert show.returncode == 0 and "Slots:" in show.stdout
    finally:
        hsmclient("mode", "stop", "--home", home)
