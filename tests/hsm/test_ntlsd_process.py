"""The client listener in the real pedhsm process: `mode start --ntls-port/--ntls-ip`,
`ntls show`, and a refused (unregistered) hsmclient logged with its fingerprint and fix."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hsm import cli
from hsmclient.remote import RemoteBackend
from hsmclient.slots import SlotMap
from ped.tls import PinStore, ensure_identity
from pedtools.testing import wait_for_log

pytestmark = pytest.mark.process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pedhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, int]]:
    monkeypatch.delenv("PEDHSM_HOME", raising=False)
    home, port = tmp_path / "hsm", free_port()
    argv = ["--home", str(home), "mode", "start", "--serial", "777002",
            "--ntls-port", str(port), "--ntls-ip", "127.0.0.1"]  # fmt: skip
    assert cli.main(argv) == 0
    yield home, port
    cli.main(["--home", str(home), "mode", "stop"])


def test_ntls_show_and_a_refused_client(
    pedhsm: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, port = pedhsm
    capsys.readouterr()
    assert cli.main(["--home", str(home), "ntls", "show"]) == 0
    shown = capsys.readouterr().out
    assert f"127.0.0.1 port {port}" in shown
    assert "Connected clients:   0" in shown
    server_cert = tmp_path / "server.pem"
    assert cli.main(["--home", str(home), "ntls", "certificate", "export", str(server_cert)]) == 0
    capsys.readouterr()
    client_home = tmp_path / "client"
    client = ensure_identity(client_home, "app-host")
    pins = PinStore(client_home, program="hsmclient")
    pins.register("hsm1", server_cert.read_bytes(), ip="127.0.0.1", port=port)

    async def slot_rows() -> list[str]:
        backend = RemoteBackend(client_home, pins, SlotMap(client_home))
        return [row.state for row in await backend.slot_rows()]

    (state,) = trio.run(slot_rows)
    assert state.startswith("server unreachable: ")
    assert "pedhsm client register --name NAME --certificate FILE" in state
    log = wait_for_log(home / "pedhsm.log", f"certificate {client.fingerprint} is unknown")
    line = next(x for x in log.splitlines() if client.fingerprint in x)
    assert "fix: if you trust it" in line and "pedhsm client register --name NAME" in line
    assert "hsmclient certificate export FILE" in line


def test_ntls_port_zero_turns_the_listener_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PEDHSM_HOME", raising=False)
    home = tmp_path / "hsm"
    assert cli.main(["--home", str(home), "mode", "start", "--ntls-port", "0"]) == 0
    try:
        capsys.readouterr()
        assert cli.main(["--home", str(home), "ntls", "show"]) == 0
        assert "turned off (--ntls-port 0)" in capsys.readouterr().out
    finally:
        cli.main(["--home", str(home), "mode", "stop"])
