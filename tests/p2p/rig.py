"""Real pedserver/pedclient processes in peer-to-peer mode, for the tests in this package.

`P2P` holds the two homes; `P2P.pair_up` exchanges certificates through the CLIs
(``certificate export`` / ``appliance register`` / ``peer register``), like an
administrator would.  Daemons run in the background (``mode start``) and are stopped by
`P2P.stop_all` (always called by the fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.pedserver.fakes import short_tmp

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
APPLIANCE = "hsm1"  # the HSM host, as pedserver registered it
PEER = "ws1"  # the PED workstation's pedserver, as pedclient registered it


def cli(
    *argv: str, timeout: float = 60.0, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pedserver|pedclient ...`` to completion (optionally on a netns host)."""
    return subprocess.run([*prefix, sys.executable, "-m", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@attrs.define
class P2P:
    root: Path
    prefix_server: Sequence[str] = ()
    prefix_client: Sequence[str] = ()
    started: list[tuple[str, Path, Sequence[str]]] = attrs.field(factory=list)

    @property
    def server_home(self) -> Path:
        return self.root / "s"

    @property
    def client_home(self) -> Path:
        return self.root / "c"

    def server(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return cli("pedserver", *argv, "--home", str(self.server_home), timeout=timeout,
                   prefix=self.prefix_server)

    def client(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return cli("pedclient", *argv, "--home", str(self.client_home), timeout=timeout,
                   prefix=self.prefix_client)

    # ------------------------------------------------------------------ certificates

    def register_server_at_client(self) -> None:
        """pedclient pins pedserver's certificate (exported through the CLI)."""
        pem = self.root / "pedserver.pem"
        ok(self.server("certificate", "export", str(pem)))
        ok(self.client("peer", "register", "--name", PEER, "--certificate", str(pem)))

    def register_client_at_server(self, ip: str, port: int) -> None:
        pem = self.root / "pedclient.pem"
        ok(self.client("certificate", "export", str(pem)))
        ok(self.server("appliance", "register", "--name", APPLIANCE, "--certificate",
                       str(pem), "--ip", ip, "--port", str(port)))

    # ------------------------------------------------------------------ daemons

    def start_server(self, device: str, *extra: str) -> None:
        ok(self.server("mode", "start", "--ip", "127.0.0.1", "--port", "0", "--device", device,
                       "--log-level", "debug", *extra))
        self.started.append(("pedserver", self.server_home, self.prefix_server))

    def start_client(self, *extra: str, port: int = 0) -> int:
        """Start pedclient with --peer-listen; returns the peer port it listens on."""
        ok(self.client("mode", "start", "--peer-listen", "--port", str(port), "--log-level",
                       "debug", *extra))
        self.started.append(("pedclient", self.client_home, self.prefix_client))
        listen = self.client_show()["peer_listen"]
        return int(listen.rsplit(":", 1)[1])

    def stop(self, prog: str) -> None:
        home = self.server_home if prog == "pedserver" else self.client_home
        prefix = self.prefix_server if prog == "pedserver" else self.prefix_client
        cli(prog, "mode", "stop", "--home", str(home), prefix=prefix)
        self.started = [s for s in self.started if s[0] != prog]

    def stop_all(self) -> None:
        for prog, home, prefix in reversed(self.started):
            cli(prog, "mode", "stop", "--home", str(home), prefix=prefix)
        self.started.clear()

    def server_show(self) -> dict[str, Any]:
        return json.loads(ok(self.server("mode", "show", "--json")))  # type: ignore[no-any-return]

    def client_show(self) -> dict[str, Any]:
        return json.loads(ok(self.client("mode", "show", "--json")))  # type: ignore[no-any-return]

    def server_log(self) -> str:
        return (self.server_home / "pedserver.log").read_text(errors="replace")

    def client_log(self) -> str:
        return (self.client_home / "pedclient.log").read_text(errors="replace")


def wait_until(check: Callable[[], bool], what: str, *, timeout: float = 60.0) -> None:
    """Poll *check* until it is true (a liveness wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.1)


async def await_until(check: Callable[[], bool], what: str, *, timeout: float = 60.0) -> None:
    await trio.to_thread.run_sync(lambda: wait_until(check, what, timeout=timeout))


def peer_state(rig: P2P, name: str = PEER) -> str:
    for peer in rig.client_show().get("peer_links", []):
        if peer["name"] == name:
            return str(peer["state"]) + (" spare" if peer["spares"] else "")
    return "absent"


@pytest.fixture
def rig() -> Iterator[P2P]:
    with short_tmp() as root:
        pair = P2P(root)
        (root / "s").mkdir(mode=0o700)
        (root / "c").mkdir(mode=0o700)
        try:
            yield pair
        finally:
            pair.stop_all()
