"""Real pedserver and pedclient processes: SIGTERM with links up, a pedserver killed in
the middle of an operation, restart and reconnect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ped.daemon.control import control_request_sync
from ped.daemon.process import start_background
from ped.link import CloseCode, LinkClosed, connect_via_pedclient
from ped.transport import TransportError
from ped.wire.framing import Frame

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def start_fake_pedserver(home: Path, port: int = 0) -> subprocess.Popen[bytes]:
    """pedserver (the real CLI and daemon, in its own process) with the test FakeDriver."""
    argv = [sys.executable, "-m", "tests.pedserver.fake_pedserver", "mode", "start",
            "--foreground", "--ip", "127.0.0.1", "--port", str(port), "--device", "fake:ped",
            "--home", str(home), "--log-level", "debug"]
    return start_background(argv, log_path=home / "out.log", env=ENV)


def start_pedclient(home: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pedclient", "mode", "start", "--home",
                             str(home)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def stop_pedclient(home: Path) -> None:
    subprocess.run([sys.executable, "-m", "pedclient", "mode", "stop", "--home", str(home)],
                   capture_output=True, timeout=60, cwd=ROOT)


def server_port(home: Path) -> int:
    return int(control_request_sync(home / "control.sock", "show")["port"])


@pytest.fixture
def homes(home):
    server_home, client_home = home / "s", home / "c"
    server_home.mkdir(mode=0o700)
    client_home.mkdir(mode=0o700)
    start_pedclient(client_home)
    yield server_home, client_home
    stop_pedclient(client_home)


async def test_sigterm_closes_links_with_a_reason(homes):
    server_home, client_home = homes
    proc = start_fake_pedserver(server_home)
    try:
        port = server_port(server_home)
        endpoint = client_home / "pedclient.sock"
        busy = await connect_via_pedclient(endpoint, "127.0.0.1", port, hsm_name="a")
        idle = await connect_via_pedclient(endpoint, "127.0.0.1", port, hsm_name="b")
        await busy.begin_operation()
        await busy.send(Frame(0x23, b"HOLD until the operator comes"))
        shown = control_request_sync(server_home / "control.sock", "show")
        assert len(shown["links"]) == 2
        proc.send_signal(signal.SIGTERM)
        for ped in (busy, idle):
            with trio.fail_after(30), pytest.raises(LinkClosed) as closed:
                await ped.receive()
            assert closed.value.code is CloseCode.SHUTTING_DOWN
            assert closed.value.retriable
            assert "stopping" in str(closed.value)
        assert await trio.to_thread.run_sync(lambda: proc.wait(timeout=30)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (server_home / "pedserver.pid").exists()
    log = (server_home / "pedserver.log").read_text()
    assert "stopping: signal SIGTERM" in log and "closing 2 link(s)" in log
    assert "HOLD until" not in log and b"HOLD until".hex() not in log
    # pedclient saw both links end and keeps serving; its log has no payload either.
    with trio.fail_after(30):
        while control_request_sync(client_home / "control.sock", "show")["links"]:
            await trio.sleep(0.05)
    client_log = (client_home / "pedclient.log").read_text()
    assert "link 1 up" in client_log and "HOLD until" not in client_log


async def test_pedserver_killed_mid_operation_then_restarted(homes):
    server_home, client_home = homes
    proc = start_fake_pedserver(server_home)
    endpoint = client_home / "pedclient.sock"
    try:
        port = server_port(server_home)
        ped = await connect_via_pedclient(endpoint, "127.0.0.1", port, hsm_name="hsm")
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"HOLD: waiting for the blue key"))
        proc.kill()  # SIGKILL: no goodbye
        proc.wait(timeout=30)
        with trio.fail_after(30), pytest.raises(LinkClosed) as closed:
            await ped.receive()
        error = closed.value
        assert isinstance(error, TransportError) and error.retriable
        assert error.code is CloseCode.SERVER_GONE and "retry" in str(error)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Restarted on the same port, a new connect through the same pedclient works.
    proc = start_fake_pedserver(server_home, port)
    try:
        ped = await connect_via_pedclient(endpoint, "127.0.0.1", port, hsm_name="hsm")
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"again"))
        assert (await ped.receive()).payload == b"niaga"
        await ped.end_operation()
        await ped.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


async def test_pedclient_sigterm_tells_the_hsm(homes):
    server_home, client_home = homes
    proc = start_fake_pedserver(server_home)
    try:
        port = server_port(server_home)
        ped = await connect_via_pedclient(client_home / "pedclient.sock", "127.0.0.1", port)
        pid = int((client_home / "pedclient.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        with trio.fail_after(30), pytest.raises(LinkClosed) as closed:
            await ped.receive()
        assert closed.value.code is CloseCode.SHUTTING_DOWN
        assert "pedclient is stopping" in str(closed.value)
        # pedserver saw the link go and serves on.
        with trio.fail_after(30):
            while control_request_sync(server_home / "control.sock", "show")["links"]:
                await trio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
