"""Frames over the maximum and length prefixes promising gigabytes: refused before buffering.

Every receiver that reads frames from a peer is fed a header announcing a huge payload,
followed by as many bytes as it will take.  Each must refuse at the header (eight bytes
in), hold nothing, and take nothing more.  ``tests/ped/wire`` checks the bare
`FrameDecoder`; here are the receivers built on it (the link connection of both hops,
the device connection of both roles, a trio transport reading a stream) and the limits
inside the channel (sealed size, operation frame size).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from keys.colors import Color
from ped.channel import DecryptFailed
from ped.device.connection import DeviceConnection
from ped.device.messages import ConnectionRole, Hello
from ped.errors import FrameTooLarge, LocalProtocolError, PedError
from ped.link import Hop, LinkConnection, Side
from ped.ops import events as ev
from ped.ops.messages import MAX_OP_PAYLOAD
from ped.wire.framing import HEADER, MAGIC, MAX_PAYLOAD, WIRE_VERSION, Frame, encode_frame
from ped.wire.types import E2EType, OpType

from ..ped.ops.helpers import connected
from ..ped.ops.memory import MemoryFrameTransport

HUGE = [MAX_PAYLOAD + 1, 1 << 30, 0xFFFFFFFF]  # just over, one gigabyte, four gigabytes
CHUNK = bytes(64 * 1024)
Receiver = tuple[Callable[[bytes], None], Callable[[], int]]  # feed bytes; bytes held


def _header(type_: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, WIRE_VERSION, type_, length)


def _link(hop: Hop, side: Side) -> Receiver:
    connection = LinkConnection(hop, side)

    def feed(data: bytes) -> None:
        connection.receive_data(data)
        connection.next_event()

    return feed, lambda: connection.buffered


def _device(role: ConnectionRole) -> Receiver:
    connection = DeviceConnection(role)
    if role is ConnectionRole.HOST:
        connection.send(Hello(host="pedserver"))

    def feed(data: bytes) -> None:
        connection.receive_data(data)
        connection.next_event()  # frames are parsed here

    return feed, lambda: connection._decoder.buffered


RECEIVERS: dict[str, tuple[Callable[[], Receiver], int]] = {
    "pedserver<-pedclient": (lambda: _link(Hop.REMOTE, Side.RESPONDER), 0x23),
    "pedclient<-pedserver": (lambda: _link(Hop.REMOTE, Side.INITIATOR), 0x23),
    "pedclient<-HSM": (lambda: _link(Hop.LOCAL, Side.RESPONDER), 0x23),
    "HSM<-pedclient": (lambda: _link(Hop.LOCAL, Side.INITIATOR), 0x23),
    "PED device<-host": (lambda: _device(ConnectionRole.DEVICE), 0x35),
    "host<-PED device": (lambda: _device(ConnectionRole.HOST), 0x35),
}


@pytest.mark.parametrize("length", HUGE)
@pytest.mark.parametrize("receiver", sorted(RECEIVERS))
def test_huge_length_prefix_is_refused_at_the_header(receiver: str, length: int) -> None:
    make, type_ = RECEIVERS[receiver]
    feed, buffered = make()
    with pytest.raises(FrameTooLarge) as excinfo:
        feed(_header(type_, length))
    assert str(length) in str(excinfo.value)
    assert buffered() == 0  # nothing kept
    with pytest.raises((LocalProtocolError, PedError)):
        feed(CHUNK)  # and nothing more is taken: the connection is finished


class CountingStream(trio.abc.Stream):
    """A stream end that counts the bytes its reader took."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.taken = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.taken += len(data)
        return data

    async def send_all(self, data: bytes) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("length", HUGE)
async def test_transport_stops_reading_at_a_huge_header(length: int) -> None:
    sender, receiver = trio.testing.memory_stream_pair()
    counting = CountingStream(receiver)
    transport = MemoryFrameTransport(counting)
    sent = 0

    async def flood() -> None:
        nonlocal sent
        await sender.send_all(_header(E2EType.SEALED, length))
        try:
            for _ in range(64):  # offer 4 MiB after the header
                await sender.send_all(CHUNK)
                sent += len(CHUNK)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        with pytest.raises(FrameTooLarge):
            await transport.receive()
        await transport.aclose()
        nursery.cancel_scope.cancel()
    # The reader refused with the header: it took at most the read that completed it,
    # however much the peer had queued behind (``sent``).
    assert counting.taken <= 8 + len(CHUNK)


def test_sealed_message_over_the_channel_maximum_is_refused_before_decryption() -> None:
    _, ped = connected()
    (failed,) = ped.receive_frame(Frame(E2EType.SEALED, bytes(MAX_PAYLOAD)))
    assert isinstance(failed, ev.SessionFailed) and isinstance(failed.error, DecryptFailed)
    assert "allowed" in str(failed.error)


def test_operation_frame_over_its_maximum_inside_a_genuine_channel_is_refused() -> None:
    """Even a peer holding the right RPV cannot make the other end buffer a huge request."""
    hsm, ped = connected()
    assert hsm._channel is not None
    oversize = encode_frame(Frame(OpType.SHOW_MESSAGE, bytes(MAX_OP_PAYLOAD + 1)))
    (failed,) = ped.receive_frame(hsm._channel.seal(oversize))
    assert isinstance(failed, ev.SessionFailed) and isinstance(failed.error, FrameTooLarge)

    hsm, ped = connected()
    ped.receive_frame(hsm.read_secret(Color.BLUE))
    assert ped._channel is not None
    with pytest.raises(FrameTooLarge):
        hsm.receive_frame(ped._channel.seal(encode_frame(Frame(OpType.NOTICE, bytes(4096)))))
