"""``pedconform ped`` as a person would run it: pedemu with ``--operator control:PATH``,
the suite's CLI and ``python -m pedtools.conform.emulated_operator`` as its adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.conform.ped_doubles import make_keyring

pytestmark = pytest.mark.process


async def _wait_for(path: Path, process: trio.Process) -> None:
    with trio.fail_after(20):
        while not path.exists():
            assert process.returncode is None, "pedemu ended before it listened"
            await trio.sleep(0.02)


async def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "pedtools.conform.cli", "ped", *args],
        capture_stdout=True, capture_stderr=True, check=False,
    )


async def test_the_suite_passes_against_pedemu_through_its_adapter(tmp_path: Path) -> None:
    rpv = make_keyring(tmp_path / "keys")
    (tmp_path / "rpv.hex").write_text(rpv.hex() + "\n")
    sock, control = tmp_path / "ped.sock", tmp_path / "control.sock"
    pedemu = await trio.lowlevel.open_process([
        sys.executable, "-m", "ped.device.emulated", "--keyring", str(tmp_path / "keys"),
        "--socket", str(sock), "--operator", f"control:{control}", "--log-level", "warning",
    ])
    try:
        await _wait_for(sock, pedemu)
        await _wait_for(control, pedemu)
        adapter = f"{sys.executable} -m pedtools.conform.emulated_operator {control}"
        done = await _run("--device", f"socket:{sock}", "--rpv-file", str(tmp_path / "rpv.hex"),
                          "--operator", adapter, "--report", str(tmp_path / "report.json"),
                          "--timeout", "20", "--key-timeout", "1", "--quiet", "0.3")
    finally:
        pedemu.terminate()
        await pedemu.wait()
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "pedconform ped PASSED" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is True and report["suite"] == "ped"
    assert report["counts"]["FAIL"] == 0 and report["counts"]["SKIP"] == 0
    # Nothing secret in what the suite prints or writes: not the RPV, not the test PIN.
    text = out + done.stderr.decode() + json.dumps(report)
    assert rpv.hex() not in text and "246802" not in text


async def test_list_and_usage_errors() -> None:
    listed = await _run("--list")
    assert listed.returncode == 0
    assert b"3.13" in listed.stdout and b"(optional)" in listed.stdout
    no_rpv = await _run("--device", "socket:/nonexistent")
    assert no_rpv.returncode == 2
    assert b"--rpv-file" in no_rpv.stderr
    no_case = await _run("--list", "--cases", "9.*")
    assert no_case.returncode == 2
    bad_rpv = await _run("--device", "socket:/x", "--rpv-hex", "abcd")
    assert bad_rpv.returncode == 2 and b"32 bytes" in bad_rpv.stderr
    no_adapter = await _run("--device", "socket:/x", "--rpv-hex", "00" * 32,
                            "--operator", "/nonexistent/adapter")
    assert no_adapter.returncode == 2
    assert b"cannot start the operator adapter" in no_adapter.stderr
