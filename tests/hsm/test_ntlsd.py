"""pedhsm's client listener in process, real sockets and real TLS: refusals and their log
lines, idle connections, the connection cap, the idle timeout, protocol errors, ntls show."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from hsmclient.remote_link import LinkDown, ServerLink
from ped.ntls import messages as m
from ped.pkcs11.constants import CKU
from ped.tls import PinStore, ensure_identity, open_pinned_tls_client
from ped.tls.certs import regenerate_identity, utcnow
from tests.ntls.fake_access import CHALLENGE
from tests.ntls.rig import NtlsRig, ntls_rig

LOGGER = "pedhsm.ntls"


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for *condition* (a log line, a state) to become true."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= 30]


async def round_trip(rig: NtlsRig) -> None:
    """A working client: open a session, log in, sign."""
    backend = rig.backend()
    app = await backend.connect()
    slot = (await app.slots())[0].slot_id
    session = await app.open_session(slot, True)
    await app.login(session, CKU.USER, bytearray(CHALLENGE))
    assert len(await app.generate_random(session, 16)) == 16
    await app.close()


async def test_unknown_certificate_refused_with_fingerprint_and_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with ntls_rig(tmp_path, client_name="someone-else") as rig:
        stranger = regenerate_identity(rig.client_home, "stranger")
        app = await rig.backend().connect()
        assert await app.slots() == []
        await wait_until(lambda: bool(warnings(caplog)))
        (line,) = warnings(caplog)
        assert stranger.fingerprint in line
        assert "is unknown" in line or "unknown" in line
        assert "pedhsm client register --name NAME --certificate FILE" in line
        assert rig.accesses == []  # no partition looked at: nothing to count
        rows = await rig.backend().slot_rows()
        assert rows[0].state.startswith("server unreachable: ")
        assert "refused our certificate" in rows[0].state


async def test_deleted_certificate_refused_naming_the_old_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ntls_rig(tmp_path) as rig:
        await round_trip(rig)
        PinStore(rig.hsm_home / "ntls", program="pedhsm").delete("app1")
        caplog.clear()
        app = await rig.backend().connect()
        assert [s.token_present for s in await app.slots()] == [False]  # known, now refused
        await wait_until(lambda: bool(warnings(caplog)))
        (line,) = warnings(caplog)
        assert "deleted" in line and "pedhsm client register --name app1" in line
        assert len(rig.accesses) == 1  # only the first, accepted, connection


async def test_expired_certificate_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_ago = utcnow() - datetime.timedelta(days=100)
    async with ntls_rig(tmp_path, client_name="someone-else") as rig:
        # hsmclient's certificate ran out since it was registered.
        old = regenerate_identity(rig.client_home, "app-host", days=30, now=long_ago)
        pins = PinStore(rig.hsm_home / "ntls", program="pedhsm")
        pins.register("old", old.certificate_pem, now=long_ago + datetime.timedelta(days=1))
        caplog.clear()
        app = await rig.backend().connect()
        assert await app.slots() == []
        await wait_until(lambda: bool(warnings(caplog)))
        (line,) = warnings(caplog)
        assert old.fingerprint in line and "expired" in line
        assert "hsmclient certificate regen" in line
        assert rig.accesses == []


async def test_a_thousand_idle_connections_never_stop_a_working_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 1,000 TCP connections that never start TLS, then 100 authenticated TLS connections
    # that sit idle after the hello, against a cap of 64 connections.
    async with ntls_rig(tmp_path, max_connections=64) as rig:
        idle_tcp = []
        for _ in range(1000):
            idle_tcp.append(await trio.open_tcp_stream("127.0.0.1", rig.port))
        backend = rig.backend()
        idle_tls = [await backend.dial("hsm1") for _ in range(100)]
        await round_trip(rig)
        assert len(rig.listener.connections) <= 64
        for link in idle_tls:
            await link.aclose()
        for stream in idle_tcp:
            await stream.aclose()


async def test_idle_timeout_closes_quiet_connections(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path, idle_timeout=0.3) as rig:
        link = await rig.backend().dial("hsm1")
        await wait_until(lambda: not rig.listener.connections)
        with pytest.raises(LinkDown, match="IDLE_TIMEOUT"):
            await link.call(m.ListPartitions)
        await link.aclose()
        await round_trip(rig)  # a new connection is welcome


async def test_protocol_error_ends_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ntls_rig(tmp_path) as rig:
        pins = PinStore(rig.client_home, program="hsmclient")
        identity = ensure_identity(rig.client_home, "app-host")
        stream = await open_pinned_tls_client("127.0.0.1", rig.port, identity, pins)
        await stream.send_all(b"RP\x01\x74\x00\x00\x00\x02\xff\xff")  # a request before hello
        assert await stream.receive_some(100) == b""
        await wait_until(lambda: any("broke the protocol" in w for w in warnings(caplog)))
        await round_trip(rig)


async def test_ntls_show_lists_address_certificate_and_clients(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path) as rig:
        link = await rig.backend().dial("hsm1")
        await link.call(m.ListPartitions)
        text = "\n".join(rig.listener.show())
        assert f"127.0.0.1 port {rig.port}" in text
        assert rig.listener.identity.fingerprint in text
        assert "Connected clients:   1" in text
        assert "app1" in text and "1 requests" in text
        await link.aclose()


async def test_requests_in_flight_on_one_connection(tmp_path: Path) -> None:
    async with ntls_rig(tmp_path) as rig:
        link: ServerLink = await rig.backend().dial("hsm1")
        serial = "1500010001"
        results: list[m.Result] = []

        async def one() -> None:
            results.append(await link.call(lambda rid: m.GetTokenInfo(rid, serial)))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one)
        assert len(results) == 20
        assert all(isinstance(r, m.TokenInfoResult) for r in results)
        await link.aclose()
