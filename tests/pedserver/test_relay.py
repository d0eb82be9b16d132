"""pedserver + pedclient on real sockets in this process, a fake PED behind pedserver."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from ped.link import (
    CloseCode,
    ConnectCode,
    ConnectFailed,
    LinkClosed,
    connect_via_pedclient,
)
from ped.transport import PedBusy, TransportError
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame
from ped.wire.types import E2E_RANGE
from pedtools.testing.tap import tcp_tap, unix_tap
from tests.pedserver.fakes import FakeDriver, running_pair


def _frames(data: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    decoder.feed(bytes(data))
    frames = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        frames.append(frame)
    decoder.check_eof()
    return frames


async def test_operation_round_trip(home):
    async with running_pair(home) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port, hsm_name="hsm1")
        assert ped.result.device.connected
        assert ped.result.device.serial == "FAKE-0001"
        await ped.begin_operation()
        await ped.send(Frame(0x20, b"hello ped"))
        reply = await ped.receive()
        assert reply == Frame(0x21, b"dep olleh")
        await ped.end_operation()
        await ped.aclose()


def _secrets(count: int) -> list[bytes]:
    return [b"SECRET" + os.urandom(26) for _ in range(count)]


def _assert_absent(secret: bytes, blob: bytes | str, where: str) -> None:
    if isinstance(blob, str):
        for form in (secret.hex(), secret.hex().upper(), repr(secret)[2:-1]):
            assert form not in blob, f"a payload appeared in {where}"
        assert secret.decode("latin-1") not in blob, f"a payload appeared in {where}"
    else:
        assert secret not in blob, f"a payload appeared in {where}"


async def test_relays_pass_frames_untouched_and_never_log_them(home, caplog):
    """Tap every byte pedclient and pedserver send and receive (local side, network side,
    device side): the end-to-end frames arrive byte for byte, nothing else carries their
    payload, and the debug logs never contain it."""
    caplog.set_level(logging.DEBUG)
    secrets = _secrets(12)
    async with running_pair(home) as pair, trio.open_nursery() as nursery:
        net_tap, tap_port = await tcp_tap(nursery, pair.port)
        local_tap = await unix_tap(nursery, home / "tap.sock", pair.endpoint)
        ped = await connect_via_pedclient(home / "tap.sock", "127.0.0.1", tap_port,
                                          hsm_name="hsm-tap")
        sent: list[Frame] = []
        for index, secret in enumerate(secrets):
            await ped.begin_operation()
            frame = Frame(0x20 if index % 3 == 0 else 0x23, secret)
            sent.append(frame)
            await ped.send(frame)
            assert await ped.receive() == Frame(0x21 if frame.type == 0x20 else 0x23,
                                                secret[::-1])
            await ped.end_operation()
        await ped.aclose()
        await local_tap.wait_ended()  # every byte of both connections is recorded
        await net_tap.wait_ended()
        nursery.cancel_scope.cancel()
    sent_bytes = [encode_frame(f) for f in sent]
    assert pair.driver.device_in == sent_bytes
    for name, stream, expected in (
        ("HSM -> pedclient", local_tap.up, sent_bytes),
        ("pedclient -> HSM", local_tap.down, pair.driver.device_out),
        ("pedclient -> pedserver", net_tap.up, sent_bytes),
        ("pedserver -> pedclient", net_tap.down, pair.driver.device_out),
    ):
        frames = _frames(stream)
        e2e = [encode_frame(f) for f in frames if f.type in E2E_RANGE]
        assert e2e == expected, name
        for frame in frames:
            if frame.type in E2E_RANGE:
                continue
            assert frame.type < 0x20 or 0x40 <= frame.type < 0x50, name
            for secret in secrets:
                _assert_absent(secret, frame.payload, f"link frame 0x{frame.type:02x}")
                _assert_absent(secret[::-1], frame.payload, f"link frame 0x{frame.type:02x}")
    text = caplog.text
    assert "PED operation 1 started" in text and "key-read blue keyset ks-test" in text
    for secret in secrets:
        _assert_absent(secret, text, "the logs")
        _assert_absent(secret[::-1], text, "the logs")


async def test_second_hsm_is_told_busy_then_served(home):
    async with running_pair(home) as pair:
        first = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port,
                                            hsm_name="hsm-a")
        second = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port,
                                             hsm_name="hsm-b")
        await first.begin_operation()
        with pytest.raises(PedBusy) as busy:
            await second.begin_operation(wait=0)
        assert busy.value.retriable
        assert "hsm-a" in str(busy.value) and "busy" in str(busy.value)
        # Both links stay open: the busy HSM can still wait its turn.
        shown = pair.server.show()
        assert [link["client"] for link in shown["links"]] == ["testhost/hsm-a",
                                                                "testhost/hsm-b"]
        assert shown["links"][0]["activity"] == "PED operation in progress"

        async def release_soon():
            await trio.sleep(0.1)
            await first.end_operation()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(release_soon)
            await second.begin_operation(wait=30)  # bounded wait: granted once free
        await second.send(Frame(0x23, b"abc"))
        assert (await second.receive()).payload == b"cba"
        await second.end_operation()
        await first.aclose()
        await second.aclose()


async def test_connection_refused_says_what_to_check(home):
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    free_port = probe.getsockname()[1]
    probe.close()
    async with running_pair(home) as pair:
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(pair.endpoint, "127.0.0.1", free_port)
        assert failed.value.code is ConnectCode.REFUSED
        assert failed.value.retriable
        assert f"is pedserver running on 127.0.0.1:{free_port}? is the port open?" in str(
            failed.value
        )
        with trio.fail_after(10):
            while pair.client.links:  # pedclient forgets the failed attempt
                await trio.sleep(0.01)


async def test_pedclient_not_running(home):
    with pytest.raises(ConnectFailed) as failed:
        await connect_via_pedclient(home / "nothing.sock", "127.0.0.1", 1503)
    assert "pedclient is not running" in str(failed.value)
    assert failed.value.retriable


async def test_not_a_pedserver(home):
    async def http_server(stream):
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with running_pair(home) as pair, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, http_server, 0)
        port = listeners[0].socket.getsockname()[1]
        with pytest.raises(ConnectFailed) as failed:
            await connect_via_pedclient(pair.endpoint, "127.0.0.1", port)
        assert failed.value.code is ConnectCode.PROTOCOL_ERROR
        assert "is it a pedserver?" in str(failed.value)
        nursery.cancel_scope.cancel()


async def test_pedserver_gone_mid_operation_is_retriable(home):
    async with running_pair(home) as pair, trio.open_nursery() as nursery:
        tap_scope = trio.CancelScope()

        async def run_tap(task_status=trio.TASK_STATUS_IGNORED):
            with tap_scope:
                async with trio.open_nursery() as inner:
                    _, port = await tcp_tap(inner, pair.port)
                    task_status.started(port)
                    await trio.sleep_forever()

        port = await nursery.start(run_tap)
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", port)
        await ped.begin_operation()
        pair.driver.hold_replies = True  # the PED is "waiting for a key"
        await ped.send(Frame(0x23, b"x"))
        tap_scope.cancel()  # the network path (or pedserver) dies mid-operation
        with pytest.raises(LinkClosed) as closed:
            await ped.receive()
        assert isinstance(closed.value, TransportError) and closed.value.retriable
        assert closed.value.code is CloseCode.SERVER_GONE
        assert "retry" in str(closed.value)
        with pytest.raises(LinkClosed):
            await ped.begin_operation()
        # A new link through the same daemons works at once.
        again = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        pair.driver.hold_replies = False
        with trio.fail_after(10):
            await again.begin_operation(wait=5)  # pedserver released the dead link's lock
        await again.aclose()
        nursery.cancel_scope.cancel()


async def test_device_absent_and_unplugged(home):
    driver = FakeDriver(present=False)
    async with running_pair(home, driver) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        assert not ped.result.device.connected
        with pytest.raises(LinkClosed) as closed:
            await ped.begin_operation()
        assert closed.value.code is CloseCode.DEVICE_ABSENT
        driver.present = True
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        await ped.begin_operation()  # pedserver opens the PED when asked
        pair.driver.hold_replies = True
        await ped.send(Frame(0x23, b"x"))
        driver.unplug()
        with pytest.raises(LinkClosed) as closed:
            await ped.receive()
        assert closed.value.code is CloseCode.DEVICE_GONE
        assert not pair.server.show()["device_connected"]


async def test_garbage_storm_does_not_disturb_a_real_session(home):
    """100 connections throw garbage at pedserver's port while an HSM works."""
    async with running_pair(home, server={"hello_timeout": 2, "max_links": 8}) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        answers: list[bytes] = []
        outcomes: dict[str, int] = {}

        async def garbage(index: int) -> None:
            kind = ("random", "huge-length", "http", "partial", "bad-type")[index % 5]
            payload = {
                "random": os.urandom(200),
                "huge-length": b"RP\x01\x01\xff\xff\xff\xff" + os.urandom(64),
                "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                "partial": b"RP",
                "bad-type": b"RP\x01\x23\x00\x00\x00\x04abcd",
            }[kind]
            stream = await trio.open_tcp_stream("127.0.0.1", pair.port)
            try:
                await stream.send_all(payload)
                with trio.fail_after(20):
                    while await stream.receive_some(4096):
                        pass
                outcomes[kind] = outcomes.get(kind, 0) + 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                outcomes[kind] = outcomes.get(kind, 0) + 1
            finally:
                await stream.aclose()

        async def work() -> None:
            for index in range(20):
                await ped.begin_operation(wait=5)
                await ped.send(Frame(0x23, bytes([index]) * 8))
                answers.append((await ped.receive()).payload)
                await ped.end_operation()
                await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for index in range(100):
                nursery.start_soon(garbage, index)
            nursery.start_soon(work)
        assert answers == [bytes([i]) * 8 for i in range(20)]
        assert sum(outcomes.values()) == 100  # pedserver closed every garbage connection
        assert len(pair.server.links) == 1
        assert pair.server.admission.handshaking == 0
        await ped.aclose()


async def test_a_ped_session_that_ends_does_not_end_the_link(home, caplog):
    """The PED ends its device session after the HSM's goodbye (or a refused handshake):
    the link stays up and the next operation gets a fresh PED session."""
    caplog.set_level(logging.INFO)
    async with running_pair(home) as pair:
        ped = await connect_via_pedclient(pair.endpoint, "127.0.0.1", pair.port)
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"BYE"))
        assert (await ped.receive()).payload == b"EYB"
        await ped.end_operation()
        with trio.fail_after(10):
            while pair.driver.sessions:  # pedserver closed the ended session
                await trio.sleep(0.01)
        await ped.begin_operation()
        await ped.send(Frame(0x20, b"next session"))
        assert (await ped.receive()).payload == b"noisses txen"
        await ped.end_operation()
        await ped.begin_operation()
        await ped.send(Frame(0x23, b"BYE again"))
        assert (await ped.receive()).payload == b"niaga EYB"
        # The HSM sends once more while it still holds the operation: a new PED session
        # takes the PED's lock before it is used.
        await ped.send(Frame(0x20, b"init"))
        assert (await ped.receive()).payload == b"tini"
        assert pair.driver.owner is not None and pair.driver.owner.id == 3
        await ped.end_operation()
        with trio.fail_after(10):
            while pair.driver.owner is not None:  # pedserver handles OpEnd
                await trio.sleep(0.01)
        assert len(pair.server.links) == 1
        await ped.aclose()
    assert "the PED ended its session" in caplog.text


async def test_server_start_errors_are_plain_exceptions(home):
    from pedserver.server import PedServer, ServerStartError
    from pedserver.settings import Settings

    async with running_pair(home) as pair:
        twin = PedServer(Settings(ip="127.0.0.1", port=0), FakeDriver(),
                         control_path=home / "server.sock")
        with pytest.raises(ServerStartError, match="already answers"):
            await twin.serve()
        clash = PedServer(Settings(ip="127.0.0.1", port=pair.port), FakeDriver())
        with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{pair.port}"):
            await clash.serve()
