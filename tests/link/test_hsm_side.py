"""connect_via_pedclient against a scripted pedclient endpoint (a real Unix socket)."""

from __future__ import annotations

import socket

import pytest
import trio

from ped.errors import LocalProtocolError
from ped.link import (
    Busy,
    Close,
    CloseCode,
    ConnectCode,
    ConnectFailed,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Hop,
    LinkClosed,
    LinkConnection,
    OpBegin,
    OpGranted,
    Side,
    connect_via_pedclient,
    default_pedclient_socket,
)
from ped.transport import FrameTransport, PedBusy
from ped.wire.framing import NEED_DATA, Frame


async def scripted_endpoint(nursery, path, script):
    """Serve one HSM connection on *path*; *script(conn, stream)* plays pedclient."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    listener = trio.SocketListener(sock)

    async def serve_one():
        stream = await listener.accept()
        conn = LinkConnection(Hop.LOCAL, Side.RESPONDER)

        async def receive():
            while (event := conn.next_event()) is NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            return event

        async def send(message):
            await stream.send_all(conn.send(message))

        await script(receive, send, stream)
        await listener.aclose()

    nursery.start_soon(serve_one)


OK = ConnectResult(ConnectCode.OK, "up", 1, 900, "ws", DeviceSummary(True, "P", "1", "S", "remote"))


async def test_request_result_busy_and_close(home):
    seen = []

    async def script(receive, send, stream):
        request = await receive()
        seen.append(request)
        await send(OK)
        seen.append(await receive())  # OpBegin
        await send(Busy("link 4 from 10.0.0.9:5000 (other-hsm)"))
        seen.append(await receive())
        await send(OpGranted())
        seen.append(await receive())  # the e2e frame
        await send(EndToEnd(Frame(0x23, b"reply")))
        await send(Close(CloseCode.IDLE_TIMEOUT, "no PED operation for 900 s"))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        ped = await connect_via_pedclient(
            home / "c.sock", "ws.example", 1503, idle_timeout=900, hsm_name="hsm1"
        )
        assert isinstance(ped, FrameTransport)
        assert ped.result.server_name == "ws" and ped.result.idle_timeout == 900
        with pytest.raises(LocalProtocolError):
            await ped.send(Frame(0x23, b"x"))  # not before begin_operation
        with pytest.raises(PedBusy, match="other-hsm"):
            await ped.begin_operation(wait=2.5)
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"data"))
        assert await ped.receive() == Frame(0x23, b"reply")
        with pytest.raises(LinkClosed) as closed:
            await ped.receive()
        assert closed.value.code is CloseCode.IDLE_TIMEOUT and closed.value.retriable
        assert "idle too long" in str(closed.value)
        assert "idle too long" in (ped.closed_reason or "")
        await ped.end_operation()  # harmless on a closed link
        await ped.aclose()
    assert seen[0] == ConnectRequest(
        host="ws.example", port=1503, idle_timeout=900, hsm_name="hsm1", connect_timeout_ms=10_000
    )
    assert seen[1] == OpBegin(2500)
    assert seen[2] == OpBegin(0)
    assert seen[3].frame == Frame(0x23, b"data")


@pytest.mark.parametrize(
    "code, retriable",
    [
        (ConnectCode.REFUSED, True),
        (ConnectCode.TIMEOUT, True),
        (ConnectCode.BAD_REQUEST, False),
        (ConnectCode.PROTOCOL_ERROR, False),
    ],
)
async def test_connect_failures_carry_pedclients_words(home, code, retriable):
    async def script(receive, send, stream):
        await receive()
        await send(ConnectResult(code, f"words for {code.name}"))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(home / "c.sock", "a", 1503)
    assert str(failed.value) == f"words for {code.name}"
    assert failed.value.code is code and failed.value.retriable is retriable


async def test_pedclient_dies_mid_operation(home):
    async def script(receive, send, stream):
        await receive()
        await send(OK)
        await receive()
        await send(OpGranted())
        await stream.aclose()  # pedclient killed

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        ped = await connect_via_pedclient(home / "c.sock", "a", 1503)
        await ped.begin_operation()
        with pytest.raises(LinkClosed) as closed:
            await ped.receive()
        assert closed.value.retriable and "pedclient went away" in str(closed.value)


async def test_silent_pedclient_times_out(home, autojump_clock):
    async def script(receive, send, stream):
        await receive()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "c.sock", script)
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(home / "c.sock", "a", 1503, timeout=3)
        assert failed.value.code is ConnectCode.TIMEOUT
        nursery.cancel_scope.cancel()


async def test_bad_arguments_fail_before_any_socket(home):
    with pytest.raises(LocalProtocolError):
        await connect_via_pedclient(home / "none.sock", "a", 0)
    with pytest.raises(LocalProtocolError):
        await connect_via_pedclient(home / "none.sock", "a", 1503, peer="b")


def test_default_socket_location(home, monkeypatch):
    monkeypatch.setenv("PEDCLIENT_HOME", str(home / "pc"))
    assert default_pedclient_socket() == home / "pc" / "pedclient.sock"
    assert default_pedclient_socket(home / "x") == home / "x" / "pedclient.sock"
