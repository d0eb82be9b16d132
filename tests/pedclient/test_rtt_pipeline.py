"""pedclient relays frames an HSM pipelines behind OP_BEGIN (link version 3), and drops
those that reach it after pedserver's Busy (pedserver would discard them); the link goes
on and the same bytes are delivered in the next hold.  In process, real sockets."""

from __future__ import annotations

import trio
import trio.testing

from ped.link import (
    Busy,
    ConnectRequest,
    ConnectResult,
    EndToEnd,
    Hop,
    LinkConnection,
    OpBegin,
    OpEnd,
    OpGranted,
    OpState,
    Side,
)
from ped.wire.framing import NEED_DATA, Frame, encode_frame
from tests.pedserver.fakes import running_pair

REQUEST = Frame(0x23, b"request")


class RawHsm:
    """The HSM's end of the local hop, driven by hand (it may read late on purpose)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = LinkConnection(Hop.LOCAL, Side.INITIATOR)

    async def send(self, *messages: object) -> None:
        await self.stream.send_all(b"".join(self.conn.send(m) for m in messages))  # type: ignore[arg-type]

    async def receive(self) -> object:
        while (event := self.conn.next_event()) is NEED_DATA:
            self.conn.receive_data(await self.stream.receive_some(65536))
        return event


async def test_frames_behind_a_refused_hold_are_dropped_and_go_in_the_next(home):
    async with running_pair(home) as pair:
        holder = RawHsm(await trio.open_unix_socket(str(pair.endpoint)))
        await holder.send(ConnectRequest(host="127.0.0.1", port=pair.port))
        assert isinstance(await holder.receive(), ConnectResult)
        await holder.send(OpBegin(0))
        assert isinstance(await holder.receive(), OpGranted)

        hsm = RawHsm(await trio.open_unix_socket(str(pair.endpoint)))
        await hsm.send(ConnectRequest(host="127.0.0.1", port=pair.port))
        result = await hsm.receive()
        assert isinstance(result, ConnectResult) and result.version == 3
        await hsm.send(OpBegin(0))
        # pedclient has relayed pedserver's Busy before our frame comes: it drops it.
        with trio.fail_after(10):
            while not any(link.hsm.connection.op_state is OpState.DISCARDING
                          for link in pair.client.links.values()):
                await trio.sleep(0.01)
        await hsm.send(EndToEnd(REQUEST))
        assert isinstance(await hsm.receive(), Busy)
        await holder.send(OpEnd())
        with trio.fail_after(10):
            while pair.server.relay.holder is not None:
                await trio.sleep(0.01)
        await hsm.send(OpBegin(0), EndToEnd(REQUEST))
        assert isinstance(await hsm.receive(), OpGranted)
        answer = await hsm.receive()
        assert isinstance(answer, EndToEnd) and answer.frame.payload == REQUEST.payload[::-1]
        assert pair.driver.device_in == [encode_frame(REQUEST)]  # once, from the second hold
