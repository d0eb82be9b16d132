"""PED ids with real daemons: testid against a pedserver, nothing, and not-a-pedserver; a
running pedclient's lookup and ``mode show``."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import pedclient.cli as pedclient_cli
import pedserver.cli as pedserver_cli
from ped.daemon.control import ControlError, control_request_sync
from tests.hsm.emulated import make_keyring
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(capsys: pytest.CaptureFixture[str], main: object, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))  # type: ignore[operator]
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def homes() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


@pytest.fixture
def pedserver(homes: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[int]:
    """A pedserver with an emulated PED on a free port; yields the port."""
    make_keyring(homes / "keys", blanks=1)
    port = _free_port()
    home = homes / "ps"
    code, out, err = run(capsys, pedserver_cli.main, "mode", "start", "--home", str(home),
                         "--ip", "127.0.0.1", "--port", str(port),
                         "--device", f"emulated:{homes / 'keys'}?operator=auto")
    assert code == 0, (out, err)
    yield port
    pedserver_cli.main(["mode", "stop", "--home", str(home)])


def test_testid_against_a_running_pedserver(homes, pedserver, capsys):
    client = str(homes / "pc")
    assert run(capsys, pedclient_cli.main, "-mode", "assignid", "-id", "1", "-ip", "127.0.0.1",
               "-port", str(pedserver), "-home", client)[0] == 0
    code, out, err = run(capsys, pedclient_cli.main, "-mode", "testid", "-id", "1",
                         "-home", client)
    assert code == 0, (out, err)
    lines = out.splitlines()
    assert lines[0].startswith(f"Testing PED id 1 -> pedserver 127.0.0.1:{pedserver}")
    assert f"pedserver reachable:  yes (TCP connection to 127.0.0.1:{pedserver} accepted)" in out
    assert "link hello:           accepted (pedserver " in out and "link version " in out
    assert "PED device:           connected (" in out
    assert "Not checked:          the orange key (RPV)" in out
    assert lines[-1] == "PED id 1 answers: `hsm ped connect --id 1` can use it."


def test_testid_against_nothing_listening(homes, capsys):
    client = str(homes / "pc")
    port = _free_port()
    run(capsys, pedclient_cli.main, "mode", "assignid", "--id", "5", "--ip", "127.0.0.1",
        "--port", str(port), "--home", client)
    # the installed command, Luna spelling: its exit code is the answer
    result = subprocess.run([sys.executable, "-m", "pedclient", "-mode", "testid", "-id", "5",
                             "-home", client], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 1, result
    assert (f"pedserver reachable:  no: connection refused by 127.0.0.1:{port}: is pedserver "
            f"running on 127.0.0.1:{port}?") in result.stdout
    assert "link hello:           not checked (an earlier stage failed)" in result.stdout
    assert "PED device:           not checked" in result.stdout
    assert result.stdout.splitlines()[-1] == "PED id 5 does not answer (see above)."


def test_testid_against_something_that_is_not_a_pedserver(homes, capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hang_up() -> None:
            conn, _ = listener.accept()
            conn.recv(1024)  # the hello
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        client = str(homes / "pc")
        run(capsys, pedclient_cli.main, "mode", "assignid", "--id", "6", "--ip", "127.0.0.1",
            "--port", str(port), "--home", client)
        code, out, _ = run(capsys, pedclient_cli.main, "mode", "testid", "--id", "6",
                           "--home", client)
        thread.join(10)
    assert code == 1
    assert "pedserver reachable:  yes" in out
    assert "link hello:           failed: " in out and "is it a pedserver?" in out, out
    assert "PED device:           not checked" in out


def test_a_running_pedclient_looks_ids_up_and_shows_them(homes, capsys):
    client = homes / "pc"
    assert run(capsys, pedclient_cli.main, "mode", "assignid", "--id", "1", "--ip", "10.0.0.5",
               "--home", str(client))[0] == 0
    code, out, err = run(capsys, pedclient_cli.main, "mode", "start", "--home", str(client))
    assert code == 0, (out, err)
    try:
        control = client / "control.sock"
        assert control_request_sync(control, "ped-id", {"id": 1}) == {
            "id": 1, "host": "10.0.0.5", "port": 1503, "target": "10.0.0.5:1503"}
        # an id assigned while pedclient runs is known at once: no restart
        run(capsys, pedclient_cli.main, "mode", "setid", "--id", "2", "--ip", "10.0.0.6",
            "--port", "1600", "--home", str(client))
        assert control_request_sync(control, "ped-id", {"id": 2})["target"] == "10.0.0.6:1600"
        with pytest.raises(ControlError) as caught:
            control_request_sync(control, "ped-id", {"id": 3})
        assert caught.value.code == "unknown-id"
        assert "PED id 3 is not defined (PED ids defined: 1, 2)" in caught.value.message
        code, out, _ = run(capsys, pedclient_cli.main, "mode", "show", "--home", str(client))
        assert code == 0
        assert "  PED ids:                  2\n    PED id 1: 10.0.0.5:1503\n" in out
        assert "    PED id 2: 10.0.0.6:1600\n" in out
    finally:
        pedclient_cli.main(["mode", "stop", "--home", str(client)])


def test_testid_against_a_pedserver_without_its_ped(homes, capsys):
    """pedserver answers and accepts the link, but no USB PED is plugged in: exit 1."""
    port = _free_port()
    server = str(homes / "ps")
    code, out, err = run(capsys, pedserver_cli.main, "mode", "start", "--home", server,
                         "--ip", "127.0.0.1", "--port", str(port), "--device", "usb")
    assert code == 0, (out, err)
    try:
        client = str(homes / "pc")
        run(capsys, pedclient_cli.main, "mode", "assignid", "--id", "0", "--ip", "127.0.0.1",
            "--port", str(port), "--home", client)
        code, out, _ = run(capsys, pedclient_cli.main, "mode", "testid", "--id", "0",
                           "--home", client)
    finally:
        pedserver_cli.main(["mode", "stop", "--home", server])
    assert code == 1
    assert "pedserver reachable:  yes" in out and "link hello:           accepted" in out
    assert "PED device:           NOT connected: pedserver has no PED; plug it in" in out, out
    assert out.splitlines()[-1] == "PED id 0 does not answer (see above)."
