"""The connections' fuzz target: the daemons' sans-IO link and device connections, fed
whatever their peer sends (state machines, not just decoders).

Byte 0 of an input picks a connection (`CONNECTIONS`: each link hop and side, each device
role); the rest is its peer's byte stream.  The connection answers as its daemon would
(`_respond`: welcome, grant, session opened...) so mutations reach the deeper states.
Only the project's typed errors (`PedError`) may come out.
"""

from __future__ import annotations

from collections.abc import Callable

from ped.device import connection as device_connection
from ped.device import messages as device_messages
from ped.errors import PedError
from ped.link import connection as link_connection
from ped.link import messages as link_messages
from ped.wire.framing import NEED_DATA, Frame
from ped.wire.types import E2EType


def _link_receiver(hop: link_connection.Hop, side: link_connection.Side) -> Callable[[], object]:
    def make() -> object:
        connection = link_connection.LinkConnection(hop, side)
        if side is link_connection.Side.INITIATOR:  # we spoke first; the fuzzer answers
            first = (
                link_messages.LinkHello()
                if hop is link_connection.Hop.REMOTE
                else link_messages.ConnectRequest(host="pedserver.example")
            )
            connection.send(first)
        return connection

    return make


def _device_receiver(role: device_messages.ConnectionRole) -> Callable[[], object]:
    def make() -> object:
        connection = device_connection.DeviceConnection(role)
        if role is device_messages.ConnectionRole.HOST:
            connection.send(device_messages.Hello(host="pedserver"))
        return connection

    return make


#: The sans-IO connections the daemons run, each fresh and waiting for its peer.
CONNECTIONS: list[tuple[str, Callable[[], object]]] = [
    (f"link.{hop.value}.{side.value}", _link_receiver(hop, side))
    for hop in link_connection.Hop
    for side in link_connection.Side
] + [(f"device.{role.value}", _device_receiver(role)) for role in device_messages.ConnectionRole]


def _respond(connection: object, event: object) -> None:
    """Answer like the daemon would, so the fuzzer's peer can reach the deeper states."""
    lm, dev = link_messages, device_messages
    if isinstance(connection, link_connection.LinkConnection):
        if isinstance(event, lm.LinkHello):
            version = link_connection.negotiate_version(event)
            if version is None:
                connection.send(lm.LinkRefused(lm.RefuseCode.UNSUPPORTED_VERSION))
            else:
                connection.send(lm.LinkWelcome(version, min(event.idle_timeout, 1800)))
        elif isinstance(event, lm.ConnectRequest):
            connection.send(lm.ConnectResult(lm.ConnectCode.OK, "", 1, event.idle_timeout))
        elif isinstance(event, lm.OpBegin):
            connection.send(lm.OpGranted())
        elif isinstance(event, lm.Keepalive):
            connection.send(lm.KeepaliveAck(event.nonce))
        elif isinstance(event, lm.LinkWelcome | lm.ConnectResult | lm.OpGranted):
            if connection.state is link_connection.LinkState.OPEN:
                if connection.op_state is link_connection.OpState.FREE:
                    connection.send(lm.OpBegin(0))
                elif connection.op_state is link_connection.OpState.HELD:
                    connection.send(lm.EndToEnd(Frame(E2EType.SEALED, bytes(16))))
    elif isinstance(connection, device_connection.DeviceConnection):
        if isinstance(event, dev.Hello):
            connection.send(dev.Info(1, "fuzz", "0", "F-1", "remote"))
        elif isinstance(event, dev.SessionOpen):
            connection.send(dev.SessionOpened(event.session))
        elif isinstance(event, dev.Info):
            connection.send(dev.SessionOpen(1))
        elif isinstance(event, dev.Ping):
            connection.send(dev.Pong(event.nonce))


def one_connection(data: bytes) -> None:
    """Byte 0 picks a connection (link hop and side, device role); the rest is what its
    peer sends, then end of stream.  The connection answers as its daemon would
    (welcome, grant, session opened...).  A device connection handles every complete
    frame of a read at once, so it is fed byte by byte to answer after each frame."""
    if not data:
        return
    _name, make = CONNECTIONS[data[0] % len(CONNECTIONS)]
    connection = make()
    stream = data[1:]
    piece = 200 if isinstance(connection, link_connection.LinkConnection) else 1
    try:
        for start in range(0, len(stream), piece):
            connection.receive_data(stream[start : start + piece])  # type: ignore[attr-defined]
            while (event := connection.next_event()) is not NEED_DATA:  # type: ignore[attr-defined]
                _respond(connection, event)
        if isinstance(connection, link_connection.LinkConnection):
            connection.receive_data(b"")
            while connection.next_event() is not NEED_DATA:
                pass
        else:
            connection.receive_eof()  # type: ignore[attr-defined]
    except PedError:
        pass
