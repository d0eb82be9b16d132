"""deploy/systemd: each unit runs its daemon in the foreground with readiness
notification and a restart policy, and its command line is one the program accepts.
The units' own ExecStart lines are run here, with a real NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hsm.shellparser import build_parser as pedhsm_parser
from hsmclient.cli import build_parser as hsmclient_parser
from pedclient.cli import build_parser as pedclient_parser
from pedserver.cli import build_parser as pedserver_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
BIN = Path(sys.executable).parent
PARSERS = {"pedserver": pedserver_parser, "pedclient": pedclient_parser,
           "pedhsm": pedhsm_parser, "hsmclient": hsmclient_parser}


def service_section(prog: str) -> dict[str, list[str]]:
    """The [Service] keys of ``deploy/systemd/<prog>.service`` (a key may repeat)."""
    keys: dict[str, list[str]] = {}
    section = None
    for line in (UNITS / f"{prog}.service").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def exec_start(prog: str, state: Path, options: str | None = None) -> list[str]:
    """The unit's ExecStart as argv: %S is *state*, $<PROG>_OPTIONS its Environment=
    default (or *options*), the program the one installed beside this Python."""
    service = service_section(prog)
    (line,) = service["ExecStart"]
    defaults = dict(shlex.split(value)[0].split("=", 1) for value in service["Environment"])
    variable = f"{prog.upper()}_OPTIONS"
    value = defaults[variable] if options is None else options
    argv = []
    for word in shlex.split(line.replace("%S", str(state))):
        if word == f"${variable}":
            argv += shlex.split(value)
        else:
            argv.append(word)
    assert argv[0] == f"/usr/local/bin/{prog}"
    return [str(BIN / prog), *argv[1:]]


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_each_unit_is_a_notifying_foreground_service_that_restarts(prog, home):
    service = service_section(prog)
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]  # a bad command line stays bad
    assert service["UMask"] == ["0077"]
    argv = exec_start(prog, home)
    assert argv[1:4] == ["mode", "start", "--foreground"]
    args = PARSERS[prog]().parse_args(argv[1:])  # the program accepts the unit's command line
    assert args.foreground and Path(args.home) == home / "remote-ped" / prog


#: CI installs systemd (for systemd-analyze) and sets this: there the check must run.
REQUIRE_ENV = "PED_REQUIRE_SYSTEMD"


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_systemd_accepts_each_unit(prog, home):
    if shutil.which("systemd-analyze") is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but systemd-analyze is missing (apt install systemd)")
        pytest.skip("no systemd-analyze here (apt install systemd); CI runs this check")
    text = (UNITS / f"{prog}.service").read_text().replace("/usr/local/bin/", f"{BIN}/")
    (home / f"{prog}.service").write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(home / f"{prog}.service")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Invalid" not in done.stderr, done.stderr


@pytest.mark.parametrize(("prog", "options"), [
    ("pedserver", "--device socket:/nonexistent/ped.sock --ip 127.0.0.1 --port 0"),
    ("pedclient", None),
    ("pedhsm", None),
])
def test_a_unit_command_line_notifies_ready_then_stopping(prog, options, home):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(home / "notify.sock"))
    notify.settimeout(30)
    (home / "remote-ped").mkdir(mode=0o700)  # systemd's StateDirectory= makes these
    (home / "remote-ped" / prog).mkdir(mode=0o700)
    proc = subprocess.Popen(exec_start(prog, home, options), cwd=ROOT,
                            env=dict(os.environ, NOTIFY_SOCKET=str(home / "notify.sock")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert notify.recv(4096).split(b"\n")[0] == b"READY=1"
        proc.send_signal(signal.SIGTERM)  # what systemctl stop sends
        if prog != "pedhsm":  # (pedhsm says nothing on the way out: it just stops)
            assert notify.recv(4096).split(b"\n")[0] == b"STOPPING=1"
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
