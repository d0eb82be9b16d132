"""The HSM watches an open link: `PedclientTransport.wait_closed` notices a close between
operations at once, says who closed it, and steps aside for an operation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ped.link import Close, CloseCode, EndToEnd, OpEnd, OpGranted, connect_via_pedclient
from ped.link.errors import LinkEnd, end_of_close
from ped.wire.framing import Frame
from tests.link.test_hsm_side import OK, scripted_endpoint


async def test_a_close_between_operations_is_noticed_and_named(home):
    operation_done = trio.Event()

    async def script(receive, send, stream):
        await receive()  # ConnectRequest
        await send(OK)
        await receive()  # OpBegin: an operation while the watcher runs
        await send(OpGranted())
        assert (await receive()).frame == Frame(0x23, b"ask")
        await send(EndToEnd(Frame(0x23, b"answer")))
        assert isinstance(await receive(), OpEnd)
        await operation_done.wait()
        await send(Close(CloseCode.SHUTTING_DOWN, "pedserver is stopping"))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        ped = await connect_via_pedclient(home / "c.sock", "ws.example", 1503)
        ended: list[LinkEnd] = []
        watched = trio.Event()

        async def watch() -> None:
            ended.append(await ped.wait_closed())
            watched.set()

        nursery.start_soon(watch)
        await trio.testing.wait_all_tasks_blocked()
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"ask"))
        assert await ped.receive() == Frame(0x23, b"answer")
        await ped.end_operation()
        assert not ended
        operation_done.set()
        with trio.fail_after(5):
            await watched.wait()
        assert ended[0] == ped.ended
        assert ended[0].by == "pedserver" and ended[0].why == "stopped"
        assert ped.closed_reason and "stopping" in ped.closed_reason
        await ped.aclose()


async def test_pedclient_that_goes_away_is_named(home):
    async def script(receive, send, stream):
        await receive()
        await send(OK)
        await stream.aclose()  # no Close: pedclient was killed

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        ped = await connect_via_pedclient(home / "c.sock", "ws.example", 1503)
        with trio.fail_after(5):
            end = await ped.wait_closed()
        assert end.by == "pedclient" and "went away" in end.why
        await ped.aclose()


@pytest.mark.parametrize(
    "code, text, by, why",
    [
        (CloseCode.SHUTTING_DOWN, "pedclient is stopping", "pedclient", "stopped"),
        (CloseCode.SHUTTING_DOWN, "pedserver is stopping", "pedserver", "stopped"),
        (CloseCode.IDLE_TIMEOUT, "no PED operation for 900 s", "pedserver", "idle timeout"),
        (CloseCode.DEVICE_GONE, "the PED went away", "pedserver", "the PED went away"),
        (CloseCode.SERVER_GONE, "the connection to pedserver was lost", "pedclient", "its "),
    ],
)
def test_who_closed_a_link(code, text, by, why):
    end = end_of_close(code, text)
    assert end.by == by and end.why.startswith(why)
    assert end.sentence("A:1503") == f"the remote PED link to A:1503 was closed by {by} ({end.why})"
