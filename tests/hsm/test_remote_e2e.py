"""The whole trusted path with real daemons: pedhsm -> pedclient -> pedserver -> emulated PED.

The RPV is made on the HSM's local PED (``hsm ped vector init``), then the HSM connects
to a remote PED (its own emulated PED in remote mode behind pedserver) through pedclient:
the remote PED asks for the orange key once, and the HSM is initialised and logged in
through it.  A wrong PED PIN over the remote path still counts; a dropped link does not.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pedclient.cli as pedclient_cli
import pedserver.cli as pedserver_cli
from hsm import cli
from hsm.clock import TEST_CLOCK_ENV
from keys.colors import Color
from tests.hsm.emulated import Script, make_keyring

SO_PIN = "2468"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp
        self.capsys = capsys
        self.keys = tmp / "keys"
        self.blanks, self.extra = make_keyring(self.keys, blanks=6)
        self.hsm_home = tmp / "hsm"
        self.client_home = tmp / "pc"
        self.server_home = tmp / "ps"
        self.port = _free_port()
        self.started: list[tuple[object, Path]] = []

    def run(self, main: object, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))  # type: ignore[operator]
        out, err = self.capsys.readouterr()
        return code, out, err

    def hsm(self, *argv: str) -> tuple[int, str, str]:
        return self.run(cli.main, "--home", str(self.hsm_home), *argv)

    def hsm_ok(self, *argv: str) -> str:
        code, out, err = self.hsm(*argv)
        assert code == 0, (argv, out, err)
        return out

    def start_all(self, local: Script, remote: Script) -> None:
        local_path = local.write(self.tmp / "local.toml")
        remote_path = remote.write(self.tmp / "remote.toml")
        code, out, err = self.run(
            pedserver_cli.main,
            "mode",
            "start",
            "--home",
            str(self.server_home),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            f"emulated:{self.keys}?operator=script:{remote_path}",
        )
        assert code == 0, (out, err)
        self.started.append((pedserver_cli.main, self.server_home))
        code, out, err = self.run(
            pedclient_cli.main, "mode", "start", "--home", str(self.client_home)
        )
        assert code == 0, (out, err)
        self.started.append((pedclient_cli.main, self.client_home))
        self.hsm_ok(
            "mode",
            "start",
            "--serial",
            "880001",
            "--local-ped",
            f"emulated:{self.keys}?mode=local&operator=script:{local_path}",
            "--pedclient",
            str(self.client_home / "pedclient.sock"),
        )
        self.started.append((cli.main, self.hsm_home))

    def stop_all(self) -> None:
        for main, home in reversed(self.started):
            main(["mode", "stop", "--home", str(home)])  # type: ignore[operator]
        self.started.clear()


@pytest.fixture
def site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Site]:
    monkeypatch.delenv(TEST_CLOCK_ENV, raising=False)
    s = Site(tmp_path, capsys)
    yield s
    s.stop_all()


def test_hsm_through_pedclient_and_pedserver(site: Site) -> None:
    orange, so, red = site.blanks[0], site.blanks[1], site.blanks[2]
    local = Script()
    local.session().imprint(orange)  # hsm ped vector init on the cabled PED
    remote = Script(orange=orange)
    remote.session()  # hsm ped connect: the orange key, once
    remote.imprint(so, pin=SO_PIN).imprint(red)  # hsm init through the remote PED
    remote.read(Color.BLUE, so, SO_PIN)  # hsm login
    remote.read(Color.BLUE, so, "0000")  # a wrong PIN over the network: counted
    site.start_all(local, remote)

    assert "Remote PED Vector set" in site.hsm_ok("hsm", "ped", "vector", "init")
    out = site.hsm_ok("hsm", "ped", "connect", "-ip", "127.0.0.1", "-port", str(site.port))
    assert "PED operation required to connect to Remote PED - use orange PED Key(s)." in out
    assert f"PED: present this HSM's orange key(s) at 127.0.0.1:{site.port}" in out
    assert "pedk 200 s per key" in out
    shown = site.hsm_ok("hsm", "ped", "show")
    assert "PED mode:           remote" in shown and f"127.0.0.1:{site.port}" in shown
    assert "Connected:          yes" in shown and "Connected since:" in shown
    # connecting again keeps the working link (no orange key asked) and says where it is
    out = site.hsm_ok("hsm", "ped", "connect", "--ip", "127.0.0.1", "--port", str(site.port))
    assert "already connected" in out and "the link stays" in out and "PED operation" not in out
    code, _, err = site.hsm("hsm", "ped", "connect", "--ip", "127.0.0.2", "--port", "1503")
    assert code == 1 and f"already connected (127.0.0.1:{site.port}" in err, err
    assert "`hsm ped disconnect` first" in err
    assert "Connected:          yes" in site.hsm_ok("hsm", "ped", "show")
    assert "Please attend to the PED." in site.hsm_ok("hsm", "init", "--label", "far")
    assert "HSM SO logged in." in site.hsm_ok("hsm", "login")
    site.hsm_ok("hsm", "logout")
    code, _, err = site.hsm("hsm", "login")
    assert code == 1 and "1 consecutive failure(s) of 3" in err

    # pedserver goes away: the HSM notices by itself, says who closed the link and when,
    # and audits it; the next login is refused with the cause and the fix, not counted,
    # and the local PED does not quietly take over
    site.run(pedserver_cli.main, "mode", "stop", "--home", str(site.server_home))
    site.started = [s for s in site.started if s[1] != site.server_home]
    shown = _wait_for_show(site, "Connected:          no")
    assert "PED mode:           remote" in shown, shown
    assert "Link lost:" in shown and "closed by pedserver (stopped)" in shown, shown
    code, _, err = site.hsm("hsm", "login")
    assert code == 1 and "login failed" not in err and "nothing was counted" in err, err
    assert f"the remote PED link to 127.0.0.1:{site.port} was closed by pedserver" in err
    assert f"run `hsm ped connect --ip 127.0.0.1 --port {site.port}`" in err, err
    assert "`hsm ped disconnect` to use the local PED" in err, err
    assert "SO login attempts left: 2" in site.hsm_ok("hsm", "show")
    out = site.hsm_ok("hsm", "ped", "disconnect")
    assert f"lost Remote PED link (127.0.0.1:{site.port}) is forgotten" in out, out
    assert "PED mode:           local" in site.hsm_ok("hsm", "ped", "show")
    assert "chain intact" in site.hsm_ok("audit", "log", "verify")
    events = [json.loads(line) for line in (site.hsm_home / "audit.log").read_text().splitlines()]
    names = [e["event"] for e in events]
    assert "rpv initialised" in names and "ped connected" in names
    assert any(
        e["event"] == "ped disconnected" and e["by"] == "pedserver" and "stopped" in e["reason"]
        for e in events
    ), events
    assert "ped link forgotten" in names
    assert "login failed" in names


def _wait_for_show(site: Site, wanted: str, timeout: float = 10.0) -> str:
    """`hsm ped show` once it says *wanted* (the HSM notices a close on its own)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = site.hsm_ok("hsm", "ped", "show")
        if wanted in shown or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)
