"""Remote RPV initialisation end to end, on real processes: pedhsm -> pedclient ->
pedserver -> pedemu, with byte taps on every hop.

``pedhsm hsm ped vector init --remote`` on a zeroized HSM prints a one-time password; the
PED's operator (a script) types it when the PED asks, then imprints the orange key.  The
HSM then connects with that orange key, which proves both hold the same RPV.  Neither the
password nor the RPV crosses a relay or reaches a relay's log; a wrong password typed
first costs one try and imprints nothing; an HSM that has an RPV refuses the remote init.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from keys import Keyring, load_image
from keys.colors import Color
from ped.daemon.control import control_request_sync
from pedtools.testing.tap import Tap, tcp_tap, unix_tap
from tests.hsm.emulated import step
from tests.pedserver.fakes import short_tmp

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERIAL = "880001"
WRONG = "00000000"


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


def _script(blank: str, *, wrong_first: bool) -> str:
    steps = ["[settings]\ntimeout = 60\n"]
    if wrong_first:
        steps.append(step("one-time password", pin=WRONG))
        steps.append(step("Wrong one-time password"))
    steps.append(step("one-time password", pin_file="otp.txt"))
    steps += [
        step("Reuse an existing", press="NO"),
        step("M value", pin="1"),
        step("N value", pin="1"),
        step("New PED PIN", press="ENTER"),
        step("duplicating", press="NO"),
        step("Insert a blank key", insert=blank),
        step("Insert a ORANGE", insert=blank),  # hsm ped connect with the new key
    ]
    return "\n".join(steps)


def _run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class Rig:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.keys = home / "keys"
        self.blank = Keyring(self.keys).add_blanks(1)[0]
        self.hsm_home, self.server_home, self.client_home = home / "h", home / "s", home / "c"
        for path in (self.server_home, self.client_home):
            path.mkdir(mode=0o700)
        self.pedemu: subprocess.Popen[bytes] | None = None
        self.taps: dict[str, Tap] = {}
        self.net_port = 0

    def pedhsm(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return _run(str(BIN / "pedhsm"), "--home", str(self.hsm_home), *argv)

    async def start(self, nursery: trio.Nursery, script: str) -> None:
        (self.home / "ped.toml").write_text(script)
        self.pedemu = subprocess.Popen(
            [str(BIN / "pedemu"), "--keyring", str(self.keys), "--socket",
             str(self.home / "ped.sock"), "--operator", f"script:{self.home / 'ped.toml'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with trio.fail_after(30):
            while not (self.home / "ped.sock").exists():
                await trio.sleep(0.05)
        self.taps["device"] = await unix_tap(nursery, self.home / "tp.sock", self.home / "ped.sock")
        for argv in (
            ["pedserver", "mode", "start", "--ip", "127.0.0.1", "--port", "0", "--device",
             f"socket:{self.home / 'tp.sock'}", "--log-level", "debug", "--home",
             str(self.server_home)],
            ["pedclient", "mode", "start", "--log-level", "debug", "--home",
             str(self.client_home)],
        ):
            done = await trio.to_thread.run_sync(_run, str(BIN / argv[0]), *argv[1:])
            assert done.returncode == 0, done.stderr
        port = control_request_sync(self.server_home / "control.sock", "show")["port"]
        self.taps["network"], self.net_port = await tcp_tap(nursery, port)
        self.taps["local"] = await unix_tap(
            nursery, self.home / "tc.sock", self.client_home / "pedclient.sock"
        )
        done = await trio.to_thread.run_sync(lambda: self.pedhsm(
            "mode", "start", "--serial", SERIAL, "--pedclient", str(self.home / "tc.sock")))
        assert done.returncode == 0, done.stderr

    def remote_init(self) -> tuple[int, str, str]:
        """Run the command; write the password it prints where the PED's operator reads
        it (the script's pin_file), as a person reading it off the HSM's terminal would."""
        proc = subprocess.Popen(
            [str(BIN / "pedhsm"), "--home", str(self.hsm_home), "hsm", "ped", "vector",
             "init", "--remote", "--ip", "127.0.0.1", "--port", str(self.net_port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        password = ""
        for line in proc.stdout:
            lines.append(line)
            found = re.search(r"One-time password: ([0-9 ]+)", line)
            if found:
                password = found.group(1).replace(" ", "")
                (self.home / "otp.txt").write_text(password)
        err = proc.stderr.read()
        proc.wait(timeout=60)
        return proc.returncode, "".join(lines), err + "\n" + password

    def stop(self) -> None:
        self.pedhsm("mode", "stop")
        for argv in (["pedclient", "mode", "stop", "--home", str(self.client_home)],
                     ["pedserver", "mode", "stop", "--home", str(self.server_home)]):
            _run(str(BIN / argv[0]), *argv[1:])
        if self.pedemu is not None:
            self.pedemu.terminate()
            self.pedemu.wait(timeout=30)


async def _flow(home: Path, *, wrong_first: bool) -> tuple[Rig, str, str, bytes]:
    rig = Rig(home)
    try:
        async with trio.open_nursery() as nursery:
            await rig.start(nursery, _script(rig.blank.name, wrong_first=wrong_first))
            with trio.fail_after(120):
                code, out, err = await trio.to_thread.run_sync(rig.remote_init)
            assert code == 0, (out, err)
            password = err.rsplit("\n", 1)[1]
            with trio.fail_after(120):
                connected = await trio.to_thread.run_sync(lambda: rig.pedhsm(
                    "hsm", "ped", "connect", "--ip", "127.0.0.1", "--port", str(rig.net_port)))
            assert connected.returncode == 0, connected.stderr
            assert "Remote PED connected" in connected.stdout
            await trio.to_thread.run_sync(rig.stop)
            for tap in rig.taps.values():
                await tap.wait_ended()
            nursery.cancel_scope.cancel()
    finally:
        rig.stop()
    (orange,) = list(Keyring(rig.keys).keys(Color.ORANGE))
    return rig, out, password, bytes(load_image(orange.path).share().value)


def _assert_nothing_leaked(rig: Rig, secrets: list[bytes]) -> None:
    recorded = {f"{name} {way}": bytes(getattr(tap, way)) for name, tap in rig.taps.items()
                for way in ("up", "down")}
    recorded["pedserver log"] = (rig.server_home / "pedserver.log").read_bytes()
    recorded["pedclient log"] = (rig.client_home / "pedclient.log").read_bytes()
    assert all(len(data) > 100 for name, data in recorded.items() if "log" not in name)
    for where, data in recorded.items():
        for value in secrets:
            for form in (value, value.hex().encode(), value.hex().upper().encode()):
                assert form not in data, f"a secret appeared in {where}"


async def test_remote_rpv_init_end_to_end(home: Path) -> None:
    rig, out, password, rpv = await _flow(home, wrong_first=False)
    assert len(password) == 8 and password.isdigit()
    assert "On the PED at 127.0.0.1:" in out and "type this password" in out
    assert "Remote PED Vector set in the HSM and on the orange PED key(s)" in out
    _assert_nothing_leaked(rig, [password.encode(), rpv])


async def test_wrong_password_on_the_ped_then_the_right_one(home: Path) -> None:
    rig, out, password, rpv = await _flow(home, wrong_first=True)
    assert "wrong (2 tries left)" in out, out
    assert "Remote PED Vector set" in out
    _assert_nothing_leaked(rig, [password.encode(), rpv])


async def test_hsm_with_an_rpv_refuses_the_remote_init(home: Path) -> None:
    rig = Rig(home)
    try:
        async with trio.open_nursery() as nursery:
            await rig.start(nursery, _script(rig.blank.name, wrong_first=False))
            code, out, err = await trio.to_thread.run_sync(rig.remote_init)
            assert code == 0, (out, err)
            code, out, err = await trio.to_thread.run_sync(rig.remote_init)
            nursery.cancel_scope.cancel()
    finally:
        rig.stop()
    assert code == 1, (out, err)
    assert "already has a Remote PED Vector" in err and "hsm ped connect" in err, err
    assert "One-time password" not in out
