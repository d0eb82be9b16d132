"""The HSM suite's PED double in memory: each fault reaches an HSM built on ped.hsm_api as the
typed error the documents name, and the wire records what the HSM did."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from keys import wipe
from ped import hsm_api
from pedtools.conform.faulty_ped import Fault, FaultyPed, Wire
from pedtools.conform.hsm_link import LinkServer
from pedtools.testing import make_keyring


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    make_keyring(tmp_path / "keyring", blanks=1)
    return tmp_path / "keyring"


@asynccontextmanager
async def serving(keyring: Path, socket: Path) -> AsyncIterator[FaultyPed]:
    ped = FaultyPed(keyring, Wire())
    async with trio.open_nursery() as nursery:
        await nursery.start(LinkServer(ped).serve_unix, socket)
        try:
            yield ped
        finally:
            nursery.cancel_scope.cancel()
            ped.wipe()


@asynccontextmanager
async def session(
    ped: FaultyPed, socket: Path, **options: float
) -> AsyncIterator[hsm_api.PedSession]:
    transport = await hsm_api.connect_via_pedclient(socket, "127.0.0.1", 1503)
    rpv = ped.orange_rpv()
    try:
        async with hsm_api.open_ped_session(
            transport, rpv=rpv, hsm_serial="T-1", **options
        ) as opened:
            yield opened
    finally:
        wipe(rpv)
        await transport.aclose()


async def _imprint_blue(ped: FaultyPed, socket: Path) -> bytes:
    async with session(ped, socket) as s:
        with await s.imprint(hsm_api.Color.BLUE, new_secret=bytes(range(32))) as done:
            return bytes(done.keyset_id)


async def test_the_right_key_is_read_back_after_an_imprint(keyring: Path, tmp_path: Path) -> None:
    sock = tmp_path / "ped.sock"
    async with serving(keyring, sock) as ped:
        keyset = await _imprint_blue(ped, sock)
        async with session(ped, sock) as s:
            with await s.read_secret(hsm_api.Color.BLUE, keyset) as got:
                assert bytes(got.secret) == bytes(range(32))
    kinds = [r.kind for r in ped.wire.records]
    assert kinds.count("channel") == 2 and "imprint" in kinds and "read" in kinds
    assert "op-begin" in kinds and "link-error" not in kinds
    assert all(bytes(range(32)).hex() not in r.detail for r in ped.wire.records)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.WRONG_COLOUR, hsm_api.WrongColor),
        (Fault.KEYSET_MISMATCH, hsm_api.KeysetMismatch),
        (Fault.CANCELLED, hsm_api.OperationCancelled),
        (Fault.KEY_TIMEOUT, hsm_api.KeyTimeout),
        (Fault.GARBAGE, hsm_api.DecryptFailed),
        (Fault.TAMPERED, hsm_api.DecryptFailed),
    ],
)
async def test_each_read_fault_is_the_typed_error(
    keyring: Path, tmp_path: Path, fault: Fault, error: type[Exception]
) -> None:
    sock = tmp_path / "ped.sock"
    async with serving(keyring, sock) as ped:
        keyset = await _imprint_blue(ped, sock)
        ped.fault = fault
        with pytest.raises(error):
            async with session(ped, sock) as s:
                await s.read_secret(hsm_api.Color.BLUE, keyset)
    assert [r.detail for r in ped.wire.records if r.kind == "fault-sent"]


@pytest.mark.parametrize("fault", [Fault.WRONG_RPV, Fault.ALTERED_RESPONSE])
async def test_handshake_faults_are_an_rpv_mismatch(
    keyring: Path, tmp_path: Path, fault: Fault
) -> None:
    sock = tmp_path / "ped.sock"
    async with serving(keyring, sock) as ped:
        ped.fault = fault
        with pytest.raises(hsm_api.RpvMismatch):
            async with session(ped, sock):
                pass


async def test_a_silent_ped_gets_the_hsms_cancel(keyring: Path, tmp_path: Path) -> None:
    sock = tmp_path / "ped.sock"
    async with serving(keyring, sock) as ped:
        keyset = await _imprint_blue(ped, sock)
        ped.fault = Fault.SILENT
        with pytest.raises(hsm_api.OperationError):
            async with session(ped, sock, op_timeout=0.5, cancel_grace=2) as s:
                await s.read_secret(hsm_api.Color.BLUE, keyset)
    kinds = [r.kind for r in ped.wire.records]
    assert "cancel" in kinds
    assert [r.detail for r in ped.wire.records if r.kind == "op-begin"][-1] == "1"


async def test_a_dropped_link_is_a_transport_error(keyring: Path, tmp_path: Path) -> None:
    sock = tmp_path / "ped.sock"
    async with serving(keyring, sock) as ped:
        keyset = await _imprint_blue(ped, sock)
        ped.fault = Fault.DROP_LINK
        with pytest.raises(hsm_api.TransportError):
            async with session(ped, sock) as s:
                await s.read_secret(hsm_api.Color.BLUE, keyset)
