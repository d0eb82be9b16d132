"""An emulated PED in the test's own trio run, worked by pedemu's control operator.

`ped_under_test` serves an `EmulatedPed` on a Unix socket (``socket:PATH`` for the
suite) and gives an operator that hands the suite's instructions straight to a
`ControlOperator` on that PED's panel: the same code as ``pedemu --operator
control:PATH`` behind ``pedtools.conform.emulated_operator``, without the processes.
A test breaks the PED (`FilteredStream`, monkeypatching) and checks which cases fail.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

import attrs
import trio

from keys import Keyring, new_keyset, secret_for_hsm
from keys.colors import Color
from ped.device.emulated.control import ControlOperator
from ped.device.emulated.server import EmulatedPed
from pedtools.conform import ped_suite
from pedtools.conform.ped_context import Settings
from pedtools.conform.ped_operator import OperatorFailed, decode_reply, encode
from pedtools.conform.report import CaseOutcome, RunReport


def make_keyring(path: Path, m: int = 1, n: int = 1, pin: str | None = None) -> bytes:
    """A keyring with the operator's orange keyset (M of N, PED PIN if *pin*); its RPV."""
    path.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    images = new_keyset(Color.ORANGE, "RPV", m, n, pin is not None, secret=secret)
    Keyring(path).imprint(images, create=True)
    if pin is None:
        return secret
    keyset = images[0].keyset_id
    assert keyset is not None
    return bytes(secret_for_hsm(bytearray(secret), keyset, pin))


class InProcessOperator:
    """The suite's operator: each instruction performed by the control operator at once."""

    def __init__(self, control: ControlOperator) -> None:
        self.control = control

    async def do(self, ins: Mapping[str, object]) -> None:
        reply = decode_reply(_dumps(await self.control.perform_line(encode(ins, 1))))
        if not reply.ok:
            raise OperatorFailed(f"operator: {reply.why}")

    async def aclose(self) -> None:
        return None


def _dumps(reply: dict[str, object]) -> bytes:
    import json

    return json.dumps(reply).encode()


class FilteredStream(trio.abc.Stream):
    """The host's bytes as the PED reads them, without the frames whose 8-byte header
    *drop* picks (a frame kept is passed on as its bytes come, never held back)."""

    def __init__(self, inner: trio.abc.Stream, drop: Callable[[bytes], bool]) -> None:
        self.inner = inner
        self.drop = drop
        self._buffer = b""
        self._forward = 0  # bytes of a kept frame still to pass on
        self._skip = 0  # bytes of a dropped frame still to swallow

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            data = await self.inner.receive_some(65536)
            if not data:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += data
            out = b""
            while self._buffer:
                if self._forward or self._skip:
                    take = min(len(self._buffer), self._forward or self._skip)
                    if self._forward:
                        out += self._buffer[:take]
                        self._forward -= take
                    else:
                        self._skip -= take
                    self._buffer = self._buffer[take:]
                    continue
                if len(self._buffer) < 8:
                    break
                header, self._buffer = self._buffer[:8], self._buffer[8:]
                length = int.from_bytes(header[4:8], "big")
                if self.drop(header):
                    self._skip = length
                else:
                    out += header
                    self._forward = length
            if out:
                return out

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.frozen
class PedUnderTest:
    uri: str
    rpv: bytes
    operator: InProcessOperator

    async def run_suite(self, cases: str | None = None, *, timeout: float = 20) -> RunReport:
        settings = Settings(self.uri, self.rpv, timeout=timeout, key_timeout=1.0, quiet=0.3)
        return await ped_suite.run_suite(settings, self.operator, ped_suite.select(cases),
                                         progress=False)


@contextlib.asynccontextmanager
async def ped_under_test(
    tmp_path: Path,
    *,
    mode: str = "remote",
    orange: tuple[int, int, str | None] = (1, 1, None),
    wrap: Callable[[trio.abc.Stream], trio.abc.Stream] | None = None,
) -> AsyncIterator[PedUnderTest]:
    keys = tmp_path / "keys"
    rpv = make_keyring(keys, *orange)
    pins = None
    if orange[2]:
        pins = tmp_path / "pins.txt"
        pins.write_text(f"RPV = {orange[2]}\n")
    ped = EmulatedPed(keys, mode=mode)
    control = ControlOperator(ped.panel, keys, str(tmp_path / "unused-control.sock"),
                              pin_file=pins)
    path = str(tmp_path / "ped.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(4)
    listener = trio.SocketListener(sock)

    async def serve_one(stream: trio.abc.Stream) -> None:
        async with ped.host_lock:
            await ped.serve(wrap(stream) if wrap else stream)

    async def accept_loop() -> None:
        async with trio.open_nursery() as inner:
            while True:
                inner.start_soon(serve_one, await listener.accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop)
        yield PedUnderTest(f"socket:{path}", rpv, InProcessOperator(control))
        nursery.cancel_scope.cancel()


def not_passed(report: RunReport) -> set[str]:
    """The required cases that did not pass (failed, or skipped because of a failure)."""
    return {c.case for c in report.cases if c.required and c.outcome is not CaseOutcome.PASS}
