"""The trio shell: the application socket, connections that break, and the others carrying on."""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from hsmclient.p11kit import open_p11kit_listener, serve_p11kit
from hsmclient.p11kit.buffer import Reader
from hsmclient.p11kit.calls import CALL_IDS, request_writer
from hsmclient.p11kit.dispatch import HANDSHAKE
from hsmclient.p11kit.errors import SocketInUse
from hsmclient.p11kit.framing import request_frame
from ped.pkcs11.constants import CKR, CKU
from pedtools.fakes.softtoken import SoftBackend

PIN = b"sekrit-challenge-9"


class RawClient:
    """A p11-kit-client stand-in on a real socket: version byte, frames, answers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.code = 16
        self.buffer = bytearray()

    @classmethod
    async def connect(cls, path: Path, version: int = 0) -> RawClient:
        client = cls(await trio.open_unix_socket(str(path)))
        await client.stream.send_all(bytes([version]))
        assert await client._read(1) == bytes([min(version, 2)])
        return client

    async def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def call(self, body: bytes) -> Reader:
        self.code += 1
        await self.stream.send_all(request_frame(self.code, body, b"client"))
        header = await self._read(12)
        assert int.from_bytes(header[:4], "big") == self.code
        return Reader(await self._read(int.from_bytes(header[8:], "big")))

    async def initialize(self) -> None:
        writer = request_writer("C_Initialize")
        writer.flagged_array(HANDSHAKE)
        writer.byte(0)
        writer.flagged_array(None)
        reader = await self.call(writer.getvalue())
        assert reader.u32() == CALL_IDS["C_Initialize"]

    async def slot_count(self) -> int:
        writer = request_writer("C_GetSlotList")
        writer.byte(0)
        writer.u32(0)
        reader = await self.call(writer.getvalue())
        assert reader.u32() == CALL_IDS["C_GetSlotList"]
        reader.array()
        assert reader.byte() == 0
        return reader.u32()


@pytest.fixture
async def served(tmp_path: Path, nursery: trio.Nursery) -> tuple[Path, SoftBackend]:
    path = tmp_path / "p11kit.sock"
    backend = SoftBackend([("app", "1001", PIN.decode()), ("two", "1002", "x")])
    await nursery.start(serve_p11kit, open_p11kit_listener(path), backend)
    return path, backend


async def test_the_socket_is_owner_only_and_a_stale_one_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "p11kit.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a crash's leftover: nobody listens
    listener = open_p11kit_listener(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(SocketInUse, match="already answers"):
            open_p11kit_listener(path)
    finally:
        listener.socket.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SocketInUse, match="not a socket"):
        open_p11kit_listener(tmp_path / "file")


async def test_an_oversized_message_closes_only_its_connection(
    served: tuple[Path, SoftBackend], caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = served
    good = await RawClient.connect(path)
    await good.initialize()
    bad = await RawClient.connect(path)
    await bad.stream.send_all((1).to_bytes(4, "big") + bytes(4) + (2**31).to_bytes(4, "big"))
    assert await bad.stream.receive_some(10) == b""  # refused from the header: closed
    assert "limit is" in caplog.text
    assert await good.slot_count() == 2
    again = await RawClient.connect(path, version=2)
    await again.initialize()
    assert await again.slot_count() == 2


async def test_a_connection_ending_mid_frame_is_logged_and_others_go_on(
    served: tuple[Path, SoftBackend], caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = served
    broken = await RawClient.connect(path)
    await broken.stream.send_all(request_frame(1, b"0123456789")[:14])
    await broken.stream.aclose()
    other = await RawClient.connect(path)
    await other.initialize()
    with trio.fail_after(5):
        while "inside a frame" not in caplog.text:
            await trio.sleep(0)  # the server logs it on its own schedule; waits for the line
    assert await other.slot_count() == 2


async def test_garbage_bodies_are_answered_and_the_connection_lives(
    served: tuple[Path, SoftBackend],
) -> None:
    path, _ = served
    client = await RawClient.connect(path)
    reader = await client.call(b"\x00\x00\x00\x12garbage")
    assert (reader.u32(), reader.array(), reader.u64()) == (0, b"u", CKR.DEVICE_ERROR)
    await client.initialize()
    assert await client.slot_count() == 2


async def test_the_application_is_closed_when_its_connection_goes_and_no_pin_is_logged(
    served: tuple[Path, SoftBackend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path, backend = served
    client = await RawClient.connect(path)
    await client.initialize()
    writer = request_writer("C_OpenSession")
    writer.u64(0)
    writer.u64(6)
    reader = await client.call(writer.getvalue())
    reader.u32(), reader.array()
    session = reader.u64()
    for pin in (b"wrong-" + PIN, PIN):
        login = request_writer("C_Login")
        login.u64(session)
        login.u64(CKU.USER)
        login.flagged_array(pin)
        await client.call(login.getvalue())
    assert backend.sessions
    await client.stream.aclose()
    with trio.fail_after(5):
        while backend.sessions:
            await trio.sleep(0)  # waits for the server's app.close()
    assert PIN.decode() not in caplog.text
    assert "CKR_PIN_INCORRECT" in caplog.text
