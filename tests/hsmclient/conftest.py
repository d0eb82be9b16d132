"""Fixtures of hsmclient's tests: the p11-kit RPC server over a `SoftBackend`, in-process or
as a process (for real clients: pkcs11-tool, PyKCS11), and the system tools they need."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

P11KIT_CLIENT = Path("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
PIN = "challenge-5ecret"  # distinctive: tests grep the logs for it
SECOND_PIN = "other-pin-77"

# The server process: a SoftBackend with two tokens behind serve_p11kit; "ready" on stdout
# once the socket listens, its log on stderr.
_SERVER = f"""
import logging, sys, trio
from pathlib import Path
from hsmclient.p11kit import open_p11kit_listener, serve_p11kit
from pedtools.fakes.softtoken import SoftBackend

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)

async def main():
    listener = open_p11kit_listener(Path(sys.argv[1]))
    backend = SoftBackend([("app", "1001", {PIN!r}), ("second", "1002", {SECOND_PIN!r})])
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_p11kit, listener, backend)
        print("ready", flush=True)

trio.run(main)
"""


def require_p11_tools() -> tuple[Path, str]:
    """p11-kit-client.so and pkcs11-tool, or a failure saying how to get them (never a skip)."""
    tool = shutil.which("pkcs11-tool")
    if P11KIT_CLIENT.exists() and tool is not None:
        return P11KIT_CLIENT, tool
    missing = [str(P11KIT_CLIENT)] if not P11KIT_CLIENT.exists() else []
    missing += [] if tool is not None else ["pkcs11-tool"]
    if os.environ.get("PED_REQUIRE_P11") == "1":
        pytest.fail(f"PED_REQUIRE_P11=1 but {', '.join(missing)} missing")
    pytest.fail(
        f"{', '.join(missing)} missing: these tests need real p11-kit clients; run "
        "`apt-get install p11-kit-modules opensc` (Debian/Ubuntu)"
    )


@attrs.frozen
class SoftServer:
    """A p11-kit RPC server process over a SoftBackend."""

    socket: Path
    log: Path
    module: Path
    tool: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "P11_KIT_SERVER_ADDRESS": f"unix:path={self.socket}"}

    def tool_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.tool, "--module", str(self.module), *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"pkcs11-tool {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\nserver log:\n{self.log.read_text()}"
            )
        return result


@pytest.fixture
def soft_server(tmp_path: Path) -> Iterator[SoftServer]:
    module, tool = require_p11_tools()
    socket = tmp_path / "p11kit.sock"
    log = tmp_path / "server.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(socket)],
            stdout=subprocess.PIPE, stderr=log_file, text=True,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"server did not start: {line!r}\n{log.read_text()}"
        yield SoftServer(socket, log, module, tool)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
