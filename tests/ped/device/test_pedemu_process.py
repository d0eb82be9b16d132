"""pedemu as its own process: reached through socket:PATH; the tty front-end via a pty."""

from __future__ import annotations

import hmac
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from keys import Keyring
from keys.colors import Color
from ped.device import DeviceGone, DeviceNotFound, open_driver
from ped.device.emulated.cli import main
from ped.hsm_api import open_ped_session

from .conftest import Ring

PEDEMU = [sys.executable, "-m", "ped.device.emulated"]


async def wait_for_socket(path: Path, process: trio.Process) -> None:
    with trio.fail_after(20):
        while not path.exists():
            assert process.returncode is None, "pedemu exited early"
            await trio.sleep(0.02)


async def test_socket_pedemu_auto(ring: Ring, tmp_path: Path) -> None:
    sock = tmp_path / "ped.sock"
    process = await trio.lowlevel.open_process(
        [
            *PEDEMU,
            "--keyring",
            str(ring.path),
            "--socket",
            str(sock),
            "--pin-file",
            str(ring.pin_file),
            "--serial",
            "SOCK-1",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        await wait_for_socket(sock, process)
        assert (sock.stat().st_mode & 0o777) == 0o600
        driver = open_driver(f"socket:{sock}")
        info = await driver.open()
        assert info.serial == "SOCK-1"
        # A second host is refused while the PED serves one.
        other = open_driver(f"socket:{sock}")
        with pytest.raises(DeviceNotFound, match="BUSY"):
            await other.open()
        transport = await driver.open_session()
        async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-S") as ped:
            result = await ped.read_secret(Color.BLUE, ring.so_keyset)
            assert hmac.compare_digest(bytes(result.secret), bytes(ring.so_expected()))
        await driver.aclose()
        # Reconnect after the host went away (pedserver restart).
        assert (await driver.open()).serial == "SOCK-1"
        await driver.aclose()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            status = await process.wait()
    assert status == 0
    assert not sock.exists()  # removed on a clean stop
    assert process.stderr is not None
    log = (await process.stderr.receive_some(65536)).decode()
    # At info level pedemu logs what someone watching the PED needs (the host logs every
    # event): the RPV handshake; the auto operator's logins (nobody waited) are debug.
    assert "session 1: handshake orange hsm HSM-S result ok" in log, log
    assert "op-started" not in log and "key-read" not in log and "op-finished" not in log
    for secret in (ring.so_pin, ring.so_secret.hex(), ring.rpv.hex()):
        assert secret not in log


async def test_socket_uri_without_pedemu_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotFound, match="pedemu --keyring DIR --socket"):
        await open_driver(f"socket:{tmp_path / 'none.sock'}").open()


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--operator" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--keyring", str(tmp_path)])  # neither --socket nor --fd
    assert exit_info.value.code == 2
    assert main(["--keyring", str(tmp_path / "missing"), "--socket", str(tmp_path / "s")]) == 2
    assert "no such key directory" in capsys.readouterr().err


async def test_tty_operator_through_a_pty(ring: Ring, tmp_path: Path) -> None:
    sock = tmp_path / "tty.sock"
    master, slave = os.openpty()
    process = await trio.lowlevel.open_process(
        [*PEDEMU, "--keyring", str(ring.path), "--socket", str(sock), "--operator", "tty"],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.DEVNULL,
    )
    os.close(slave)
    terminal = trio.lowlevel.FdStream(master)
    seen = bytearray()

    async def expect(text: str) -> None:
        with trio.fail_after(20):
            while text.encode() not in seen:
                chunk = await terminal.receive_some(65536)
                assert chunk, "pedemu closed the terminal"
                seen.extend(chunk)
        del seen[: seen.index(text.encode()) + len(text)]

    async def pick(path: Path) -> None:
        number = Keyring(ring.path).paths().index(path) + 1
        await terminal.send_all(b"i")
        await expect("Key number")
        await terminal.send_all(f"{number}\r".encode())
        await expect("press Enter on the PED")
        await terminal.send_all(b"\r")

    try:
        await expect("Awaiting command...")
        await wait_for_socket(sock, process)
        driver = open_driver(f"socket:{sock}")
        await driver.open()
        transport = await driver.open_session()
        orange = Keyring(ring.path).keys(Color.ORANGE)[0].path
        blue = sorted(e.path for e in Keyring(ring.path).keys(Color.BLUE))

        async with trio.open_nursery() as nursery:
            result: dict[str, bytes] = {}

            async def hsm() -> None:
                async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-T") as ped:
                    r = await ped.read_secret(Color.BLUE, ring.so_keyset)
                    result["secret"] = bytes(r.secret)

            nursery.start_soon(hsm)
            await expect("Insert a ORANGE PED key")
            await pick(orange)
            await expect("Insert a BLUE PED key")
            await pick(blue[0])
            await expect("Enter PED PIN")
            await terminal.send_all(b"12\x7f\x7f")  # typed and erased with Backspace
            await terminal.send_all(ring.so_pin.encode() + b"\r")
            await expect("Key 2 of 2")
            await pick(blue[1])
        assert hmac.compare_digest(result["secret"], bytes(ring.so_expected()))
        assert ring.so_pin.encode() not in seen  # the PIN shows as stars only

        # An imprint through the same terminal: the four questions, then two blanks.
        Keyring(ring.path).add_blanks(1)
        blanks = Keyring(ring.path).blanks()
        assert len(blanks) == 4
        transport = await driver.open_session()
        async with trio.open_nursery() as nursery:
            imprinted: dict[str, object] = {}

            async def hsm_imprint() -> None:
                async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="HSM-T") as ped:
                    r = await ped.imprint(
                        Color.GRAY, new_secret=bytearray(32), allow_reuse=True, label="CU"
                    )
                    imprinted["result"] = (r.m, r.n, r.pin, r.copies, r.keyset_id)

            nursery.start_soon(hsm_imprint)
            await expect("Insert a ORANGE PED key")
            await pick(orange)
            await expect("Reuse an existing")
            await terminal.send_all(b"n")
            await expect("M value")
            await terminal.send_all(b"2\r")
            await expect("N value")
            await terminal.send_all(b"2\r")
            await expect("New PED PIN")
            await terminal.send_all(b"4321\r")
            await expect("Confirm new PED PIN")
            await terminal.send_all(b"4321\r")
            await expect("duplicating")
            await terminal.send_all(b"y")
            await expect("Copies of each key")
            await terminal.send_all(b"1\r")
            for blank in blanks:
                await expect("Insert a blank key")
                await pick(blank)
        m, n, pin, copies, keyset = imprinted["result"]  # type: ignore[misc]
        assert (m, n, pin, copies) == (2, 2, True, 4)
        assert {e.path for e in Keyring(ring.path).keys(Color.GRAY, keyset)} == set(blanks)
        await driver.aclose()
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C
        with trio.fail_after(20):
            status = await process.wait()
        await terminal.aclose()
    assert status == 0


async def test_script_unplug_through_socket_then_replug(ring: Ring, tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    orange = Keyring(ring.path).keys(Color.ORANGE)[0].path.name
    script = tmp_path / "unplug.toml"
    script.write_text(
        f'[[step]]\nexpect = "Insert a ORANGE"\ninsert = "{orange}"\n'
        '[[step]]\nexpect = "Insert a RED"\nunplug = true\n'
    )
    process = await trio.lowlevel.open_process(
        [
            *PEDEMU,
            "--keyring",
            str(ring.path),
            "--socket",
            str(sock),
            "--operator",
            f"script:{script}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_socket(sock, process)
        driver = open_driver(f"socket:{sock}")
        await driver.open()
        transport = await driver.open_session()
        with pytest.raises(DeviceGone):
            async with open_ped_session(transport, rpv=ring.rpv, hsm_serial="H") as ped:
                await ped.read_secret(Color.RED)
        assert not driver.is_open
        info = await driver.open()  # plugged back in
        assert info.model == "pedemu"
        await driver.ping()
        await driver.aclose()
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await process.wait() == 0


def test_startup_errors_name_the_problem(
    capsys: pytest.CaptureFixture[str], ring: Ring, tmp_path: Path
) -> None:
    bad_pins = tmp_path / "pins.txt"
    bad_pins.write_text("SO = 987\n")  # too short; the digits must never be echoed
    sock = str(tmp_path / "x.sock")
    assert main(["--keyring", str(ring.path), "--socket", sock, "--pin-file", str(bad_pins)]) == 2
    err = capsys.readouterr().err
    assert "pins.txt" in err and "line 1" in err and "987" not in err.replace(str(tmp_path), "")
    assert main(["--keyring", str(ring.path), "--socket", sock, "--auto-m", "3"]) == 2
    assert "M <= N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--keyring", str(ring.path), "--socket", sock, "--key-timeout", "0"])
    assert "1 to 86400" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["--keyring", str(ring.path), "--socket", str(tmp_path / "file")]) == 2
    assert "is not a socket" in capsys.readouterr().err
