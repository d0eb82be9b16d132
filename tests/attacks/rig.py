"""Real daemons for the daemon-level attack tests, and a malicious relay.

`Stack` starts, each as its own process, an emulated PED (``pedemu`` on a Unix socket,
auto operator, remote mode: it asks for the orange key), ``pedserver`` (its device is
that socket) and ``pedclient``.  The HSM side is the test itself, speaking through
``ped.hsm_api`` over ``connect_via_pedclient``: `Stack.login` is one whole legitimate
session (RPV handshake, then a blue key read) and returns the secret the HSM received.

`EvilRelay` is a TCP proxy put between pedclient and pedserver.  It cuts the byte
stream of each direction into frames (the 8-byte envelope header says how long each
is) and hands every frame to a per-direction *mutator*, which returns the bytes to
forward instead (the frame itself, nothing, twice, one bit flipped...), or `CUT` to
end the connection right there.  Every byte is recorded, so a session can be replayed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import trio

from keys import Keyring, load_image, new_keyset
from keys.collector import ShareCollector
from keys.colors import Color
from ped.daemon.control import control_request_sync
from ped.hsm_api import open_ped_session
from ped.link import connect_via_pedclient
from ped.wire.framing import HEADER_SIZE
from tests.pedserver.test_processes import start_pedclient, stop_pedclient

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
RPV = bytes(range(32))
HSM_SERIAL = "150001"

#: A mutator's answer that ends the connection (both directions) at this frame.
CUT = object()


@attrs.frozen
class Cut:
    """A mutator's answer: forward *partial* (e.g. half the frame), then end the connection."""

    partial: bytes

Mutator = Callable[[int, bytes], "bytes | object"]


def _keep(_index: int, frame: bytes) -> bytes:
    return frame


@attrs.define
class Direction:
    """One direction of one relayed connection: what came in, and its frames."""

    name: str  # "up" or "down": the relay's mutator of that name applies
    received: bytearray = attrs.field(factory=bytearray)
    frames: list[bytes] = attrs.field(factory=list)


class EvilRelay:
    """A frame-aware TCP proxy with a mutator per direction (see the module docstring)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.up_mutator: Mutator = _keep  # pedclient -> pedserver
        self.down_mutator: Mutator = _keep  # pedserver -> pedclient
        self.connections: list[tuple[Direction, Direction]] = []

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self._handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    async def _pump(
        self, src: trio.abc.Stream, dst: trio.abc.Stream, way: Direction,
        cancel: trio.CancelScope,
    ) -> None:
        buffer = bytearray()
        try:
            while data := await src.receive_some(65536):
                way.received += data
                buffer += data
                while len(buffer) >= HEADER_SIZE:
                    size = HEADER_SIZE + int.from_bytes(buffer[4:8], "big")
                    if len(buffer) < size:
                        break
                    frame = bytes(buffer[:size])
                    del buffer[:size]
                    way.frames.append(frame)
                    # Looked up per frame: a test may re-arm the relay mid-connection.
                    mutator = getattr(self, f"{way.name}_mutator")
                    out = mutator(len(way.frames) - 1, frame)
                    if isinstance(out, Cut):
                        await dst.send_all(out.partial)
                        out = CUT
                    if out is CUT:
                        cancel.cancel()
                        return
                    assert isinstance(out, bytes)
                    if out:
                        await dst.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        cancel.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        up, down = Direction("up"), Direction("down")
        self.connections.append((up, down))
        try:
            server = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, client, server, up, nursery.cancel_scope)
            nursery.start_soon(self._pump, server, client, down, nursery.cancel_scope)


class Stack:
    """pedemu + pedserver + pedclient as real processes; see the module docstring."""

    def __init__(self, home: Path, *, server_config: dict[str, object] | None = None) -> None:
        self.home = home
        self.keys = home / "keys"
        self.keys.mkdir()
        ring = Keyring(self.keys)
        ring.imprint(new_keyset(Color.ORANGE, "RPV", 1, 1, secret=RPV), create=True)
        [blue] = ring.imprint(new_keyset(Color.BLUE, "HSM SO", 1, 1), create=True)
        collector = ShareCollector(Color.BLUE)
        collector.add(load_image(blue))
        self.expected = bytes(collector.secret_for_hsm(None))
        self.server_home = home / "s"
        self.client_home = home / "c"
        self.server_config = server_config or {}
        self.pedemu: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def endpoint(self) -> Path:
        return self.client_home / "pedclient.sock"

    def _cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env=ENV)

    def start(self) -> None:
        ped_sock = self.home / "ped.sock"
        self.pedemu = subprocess.Popen(
            [str(BIN / "pedemu"), "--keyring", str(self.keys), "--socket", str(ped_sock),
             "--operator", "auto", "--key-timeout", "20", "--log-level", "debug"],
            stdout=subprocess.DEVNULL, stderr=(self.home / "pedemu.err").open("wb"),
        )
        _wait_for_path(ped_sock)
        self.server_home.mkdir(mode=0o700)
        self.client_home.mkdir(mode=0o700)
        for key, value in self.server_config.items():
            done = self._cli("pedserver", "mode", "config", "--set", key, str(value),
                             "--home", str(self.server_home))
            assert done.returncode == 0, done.stderr
        done = self._cli("pedserver", "mode", "start", "--ip", "127.0.0.1", "--port", "0",
                         "--device", f"socket:{ped_sock}", "--log-level", "debug",
                         "--home", str(self.server_home))
        assert done.returncode == 0, done.stderr
        self.port = int(control_request_sync(self.server_home / "control.sock", "show")["port"])
        start_pedclient(self.client_home)

    def stop(self) -> None:
        stop_pedclient(self.client_home)
        self._cli("pedserver", "mode", "stop", "--home", str(self.server_home))
        if self.pedemu is not None:
            self.pedemu.terminate()
            self.pedemu.wait(timeout=30)

    def server_pid(self) -> int:
        return int((self.server_home / "pedserver.pid").read_text())

    def client_pid(self) -> int:
        return int((self.client_home / "pedclient.pid").read_text())

    def server_log(self) -> str:
        return (self.server_home / "pedserver.log").read_text(errors="replace")

    def client_log(self) -> str:
        return (self.client_home / "pedclient.log").read_text(errors="replace")

    def key_reads(self) -> int:
        """How many keys the PED has read so far (pedserver logs the PED's events)."""
        return len(re.findall(r"key-read", self.server_log()))

    def links(self) -> list[object]:
        return list(control_request_sync(self.server_home / "control.sock", "show")["links"])

    async def login(self, port: int | None = None, *, rpv: bytes = RPV,
                    color: Color = Color.BLUE, op_timeout: float = 30,
                    cancel_grace: float = 5) -> bytes:
        """One whole legitimate session: connect, handshake, read a key, close."""
        transport = await connect_via_pedclient(self.endpoint, "127.0.0.1", port or self.port,
                                                hsm_name="attack-test")
        try:
            with trio.fail_after(60):
                async with open_ped_session(transport, rpv=rpv, hsm_serial=HSM_SERIAL,
                                            key_timeout=20, op_timeout=op_timeout,
                                            cancel_grace=cancel_grace) as ped:
                    result = await ped.read_secret(color, label="HSM SO")
                    return bytes(result.secret)
        finally:
            await transport.aclose()

    async def wait_no_links(self) -> None:
        """pedserver has forgotten every link (the PED is idle again)."""
        with trio.fail_after(30):
            while self.links():
                await trio.sleep(0.05)


def _wait_for_path(path: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@contextlib.contextmanager
def running_stack(home: Path, **kwargs: object) -> Iterator[Stack]:
    stack = Stack(home, **kwargs)  # type: ignore[arg-type]
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def vm_rss_kib(pid: int) -> int:
    """Resident memory of *pid* in KiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")
