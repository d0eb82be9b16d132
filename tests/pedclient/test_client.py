"""pedclient's local endpoint: requests, limits, timeouts (in process, real sockets)."""

from __future__ import annotations

import pytest
import trio

from ped.link import ConnectCode, ConnectFailed, connect_via_pedclient
from tests.frames import frame_bytes
from tests.pedserver.fakes import running_pair


async def test_several_hsms_hold_links_at_once(home):
    async with running_pair(home) as pair:
        peds = [await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port,
                                            hsm_name=f"hsm{i}") for i in range(4)]
        shown = pair.client.show()
        assert [link["hsm"] for link in shown["links"]] == ["hsm0", "hsm1", "hsm2", "hsm3"]
        assert all(link["activity"] == "idle" for link in shown["links"])
        for ped in peds:
            await ped.begin_operation(wait=5)
            await ped.end_operation()
        for ped in peds:
            await ped.aclose()


async def test_link_limit(home):
    async with running_pair(home, client={"max_links": 1}) as pair:
        first = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        assert failed.value.code is ConnectCode.TOO_MANY_LINKS and failed.value.retriable
        await first.aclose()


async def test_the_shorter_idle_timeout_wins_end_to_end(home):
    async with running_pair(home, server={"idle_timeout": 900},
                            client={"idle_timeout": 600}) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port,
                                          idle_timeout=1200)
        assert ped.result.idle_timeout == 600
        await ped.aclose()
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port,
                                          idle_timeout=30)
        assert ped.result.idle_timeout == 30
        await ped.aclose()


async def test_a_peer_request_is_unavailable_without_peer_mode(home):
    async with running_pair(home) as pair:
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(pair.endpoint, None, peer="workstation-7")
        assert failed.value.code is ConnectCode.PEER_UNAVAILABLE
        assert "peer-to-peer" in str(failed.value)


async def test_garbage_on_the_local_endpoint(home):
    async with running_pair(home) as pair:
        stream = await trio.open_unix_socket(str(pair.endpoint))
        await stream.send_all(frame_bytes(0x40, b"\x07junk"))
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer[3] == 0x41  # a ConnectResult saying why
        assert b"bad connect request" in answer
        # and the endpoint still serves
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        await ped.aclose()


async def test_start_errors_are_plain_exceptions(home):
    from pedclient.client import ClientStartError, PedClient
    from pedclient.settings import Settings

    async with running_pair(home) as pair:
        # A second pedclient on the same control socket: one clear error, no group.
        second = PedClient(Settings(), endpoint_path=home / "other.sock",
                           control_path=home / "client-control.sock")
        with pytest.raises(ClientStartError, match="already answers"):
            await second.serve()
        # ...and on the same endpoint.
        third = PedClient(Settings(), endpoint_path=pair.endpoint)
        with pytest.raises(ClientStartError, match="already listens"):
            await third.serve()


async def test_a_normal_close_by_the_hsm_is_logged_as_such(home, caplog):
    """Issue 15: every clean close used to be logged as "pedserver's connection was lost"
    (pedclient's own close of the pedserver side ended the other relay task first)."""
    caplog.set_level("INFO", "pedclient")
    async with running_pair(home) as pair:
        for _ in range(5):
            ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
            await ped.begin_operation(wait=5)
            await ped.end_operation()
            await ped.aclose()
        with trio.fail_after(10):
            while caplog.text.count(") closed: ") < 5:
                await trio.sleep(0.01)
    closes = [r.getMessage() for r in caplog.records if ") closed: " in r.getMessage()]
    assert all("closed by the HSM" in line for line in closes), closes
