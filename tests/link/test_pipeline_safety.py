"""A sealed frame pipelined behind OP_BEGIN is never lost, reordered or sealed twice.

Busy: the request a busy PED never got is sent again, byte for byte, with the CANCEL
sealed behind it, at the start of the next operation, which then succeeds.  A cancel,
a timeout or a lost link while the hold is requested: the link (and so the channel)
ends and nothing is ever sent again.  In this process, over the delay proxy.
"""

from __future__ import annotations

import hmac

import pytest
import trio

from keys.colors import Color
from ped.device.emulated.auto import AutoOperator
from ped.device.emulated.server import EmulatedPed
from ped.errors import PedError
from ped.hsm_api import open_ped_session
from ped.link import (
    Close,
    ConnectCode,
    ConnectionLost,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    LinkClosed,
    OpBegin,
    connect_via_pedclient,
)
from ped.ops.errors import OperationCancelled
from ped.transport import PedBusy
from ped.wire.framing import Frame
from pedtools.fakes.inprocess import InProcessPedDriver
from tests.link.rtt_rig import Keys, Recorder, clock, long_link, make_keys
from tests.link.test_hsm_side import scripted_endpoint

__all__ = ["clock"]


@pytest.fixture
def keys(tmp_path) -> Keys:
    return make_keys(tmp_path / "keys")


async def released(rig) -> None:
    """Until pedserver has seen the other HSM's OP_END (it travels on another link)."""
    while rig.server.relay.holder is not None:
        await trio.sleep(0.1)


async def test_busy_the_same_bytes_go_again_and_the_session_goes_on(clock, home, keys):
    async with long_link(home, keys) as rig:
        hsm = Recorder(await rig.connect())
        async with open_ped_session(hsm, rpv=keys.rpv, hsm_serial="HSM-B", busy_wait=0) as ped:
            other = await rig.connect()
            await other.begin_operation(wait=0)  # another HSM holds the PED
            with pytest.raises(PedBusy, match="busy with another HSM"):
                await ped.read_secret(Color.BLUE)
            (request,) = hsm.busy[-1]  # what pedserver discarded (or pedclient dropped)
            assert hsm.holds[-1] == [request]
            assert ped.usable  # the session keeps it, and a CANCEL behind it: nothing lost
            with pytest.raises(PedBusy):  # still busy: the same bytes, refused again
                await ped.read_secret(Color.BLUE)
            assert hsm.holds[-1][0] == request and len(hsm.holds[-1]) == 2
            cancel = hsm.holds[-1][1]
            assert hsm.busy[-1] == (request, cancel)
            await other.end_operation()
            await released(rig)
            with await ped.read_secret(Color.BLUE, label="again") as result:
                assert hmac.compare_digest(bytes(result.secret), keys.blue_secret)
            # The PED got the very bytes first sealed (no frame sealed anew under a used
            # nonce), then the new request, sealed under the next one.
            delivered, new = hsm.holds[-2], hsm.holds[-1]
            assert delivered == [request, cancel]
            assert len(new) == 1 and new[0] not in (request, cancel)
            with await ped.read_secret(Color.BLUE):
                pass  # and the channel is in step
        await other.aclose()
        await hsm.aclose()


async def test_cancel_while_requested_follows_the_request(clock, home, keys):
    async with long_link(home, keys) as rig:
        hsm = Recorder(await rig.connect())
        async with open_ped_session(hsm, rpv=keys.rpv, hsm_serial="HSM-C", busy_wait=60) as ped:
            other = await rig.connect()
            await other.begin_operation(wait=0)
            outcome: list[object] = []

            async def login() -> None:
                try:
                    with await ped.read_secret(Color.BLUE) as result:
                        outcome.append(result)  # the (instant) PED finished first
                except OperationCancelled as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(login)
                await trio.sleep(5)  # the request waits behind the other HSM's hold
                nursery.start_soon(ped.cancel)
                await trio.sleep(5)
                await other.end_operation()
            assert len(outcome) == 1
            request_hold = hsm.holds[-1]
            assert len(request_hold) == 2  # the request with OP_BEGIN, the CANCEL after it
            assert ped.usable
            with await ped.read_secret(Color.BLUE) as result:  # the channel is in step
                assert hmac.compare_digest(bytes(result.secret), keys.blue_secret)
        await other.aclose()
        await hsm.aclose()


async def test_a_caller_that_gives_up_while_requested_ends_the_link(clock, home, keys):
    async with long_link(home, keys) as rig:
        hsm = Recorder(await rig.connect())
        async with open_ped_session(hsm, rpv=keys.rpv, hsm_serial="HSM-D", busy_wait=60) as ped:
            other = await rig.connect()
            await other.begin_operation(wait=0)
            with trio.move_on_after(5):
                await ped.read_secret(Color.BLUE)
            sent = [list(hold) for hold in hsm.holds]
            assert not ped.usable
            with pytest.raises(PedError):
                await ped.read_secret(Color.BLUE)
            assert hsm.holds == sent  # nothing went again
        await other.aclose()


async def test_a_link_lost_while_requested_sends_nothing_again(clock, home, keys):
    async with long_link(home, keys) as rig:
        hsm = Recorder(await rig.connect())
        async with open_ped_session(hsm, rpv=keys.rpv, hsm_serial="HSM-E", busy_wait=60) as ped:
            other = await rig.connect()
            await other.begin_operation(wait=0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 5)
                rig.server.request_stop("test: pedserver stops")
                with pytest.raises(LinkClosed):
                    await ped.read_secret(Color.BLUE)
            sent = [list(hold) for hold in hsm.holds]
            assert not ped.usable
            with pytest.raises(PedError):
                await ped.read_secret(Color.BLUE)
            assert hsm.holds == sent


OK3 = ConnectResult(ConnectCode.OK, "up", 3, 900, "ws", DeviceSummary(True, "P", "1", "S", "r"))


async def test_no_answer_to_a_pipelined_op_begin_closes_the_link(autojump_clock, home):
    got: list[object] = []

    async def silent_pedserver(receive, send, stream):
        await receive()
        await send(OK3)
        while not isinstance(event := await receive(), Close | ConnectionLost):
            got.append(event)
        got.append(event)

    frame = Frame(0x23, b"sealed request")
    async with trio.open_nursery() as nursery:
        await scripted_endpoint(nursery, home / "pc.sock", silent_pedserver)
        ped = await connect_via_pedclient(home / "pc.sock", "10.0.0.2")
        start = trio.current_time()
        with pytest.raises(LinkClosed, match="did not answer the operation request"):
            await ped.begin_operation_with([frame], wait=0)
        assert trio.current_time() - start == pytest.approx(30)
    assert got[:2] == [OpBegin(0), EndToEnd(frame)]
    assert isinstance(got[2], ConnectionLost) and len(got) == 3  # and nothing else came


class Sent:
    """A transport without pipelining (a cabled PED's session) that keeps what it sent."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.sent: list[bytes] = []

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.inner.begin_operation(wait=wait)

    async def send(self, frame: Frame) -> None:
        self.sent.append(bytes(frame.payload))
        await self.inner.send(frame)

    async def receive(self) -> Frame:
        return await self.inner.receive()

    async def end_operation(self) -> None:
        await self.inner.end_operation()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_busy_on_a_transport_that_does_not_pipeline(keys, nursery):
    """The same rule without pipelining: the request sealed for a hold the PED refused
    was never sent; it goes (with its CANCEL) at the next operation, then the new one."""
    emulated = EmulatedPed(keys.path, serial="LOCAL-1")
    nursery.start_soon(AutoOperator(emulated.panel, keys.path).run)
    driver = InProcessPedDriver(emulated, nursery)
    await driver.open()
    hsm = Sent(await driver.open_session())
    other = await driver.open_session()
    async with open_ped_session(hsm, rpv=keys.rpv, hsm_serial="HSM-L", busy_wait=0) as ped:
        await other.begin_operation(wait=0)
        with pytest.raises(PedBusy):
            await ped.read_secret(Color.BLUE)
        before = list(hsm.sent)
        assert ped.usable
        await other.end_operation()
        with await ped.read_secret(Color.BLUE) as result:
            assert hmac.compare_digest(bytes(result.secret), keys.blue_secret)
        request, cancel, new = hsm.sent[len(before):]
        assert len({request, cancel, new}) == 3
    await other.aclose()
    await driver.aclose()
