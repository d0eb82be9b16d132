"""pedclient's relay of one link: HSM <-> pedserver frames, keepalives, the read timeout.

    HSM --OpBegin/OpEnd/e2e/Close--> pedclient --same--> pedserver
    HSM <--OpGranted/Busy/e2e/Close-- pedclient <--same-- pedserver
                                      pedclient <-Keepalive/Ack-> pedserver

``mode show`` says "waiting for pedserver" from the HSM's OpBegin or request until
something shows pedserver has it (OpGranted/Busy, a frame of the PED, the answer to a
keepalive sent after it), and when pedserver was last heard from.

End-to-end frames pass as the same bytes (only the type byte is looked at).  On a link
of version 3 the HSM may pipeline frames behind its OpBegin; they go on to pedserver,
which delivers them if it grants the hold.  Those that reach us after pedserver's Busy
are dropped here (pedserver would discard them: the HSM keeps and re-sends them).  If
pedserver goes away or stops answering for ``socket_read_rsp_timeout``, the HSM gets a
Close with SERVER_GONE / PEER_UNRESPONSIVE: a retriable error, never a failed login.
"""

from __future__ import annotations

import itertools

import attrs
import trio

from ped.errors import LocalProtocolError, PedError, RemoteProtocolError
from ped.link.connection import ConnectionLost, LinkState, OpState, Undelivered
from ped.link.errors import LinkClosed, close_code_for, describe_close
from ped.link.messages import (
    OP_TIMEOUT_VERSION,
    Busy,
    Close,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    OpBegin,
    OpEnd,
    OpGranted,
    fit_text,
)
from ped.wire.types import CloseCode
from pedclient.links import ClientLink, ClientLinkActivity


def _for_server(message: OpBegin, version: int | None) -> OpBegin:
    """The HSM's OpBegin as pedserver's link version carries it: an operation timeout
    only from version 2 on (the HSM announces it only then; this is the belt)."""
    if message.op_timeout is not None and (version or 0) < OP_TIMEOUT_VERSION:
        return attrs.evolve(message, op_timeout=None)
    return message


class LinkRelay:
    """Relays the links of one pedclient (``socket_read_rsp_timeout`` is its setting)."""

    def __init__(self, socket_read_rsp_timeout: int) -> None:
        self.socket_read_rsp_timeout = socket_read_rsp_timeout

    async def run(self, record: ClientLink) -> None:
        """Relay *record* both ways with keepalives until either side ends it."""
        record.heard()  # pedserver just welcomed the link
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._hsm_to_server, record, nursery.cancel_scope)
            nursery.start_soon(self._server_to_hsm, record, nursery.cancel_scope)
            nursery.start_soon(self._keepalive, record, record.keepalive_interval)

    async def _hsm_to_server(self, record: ClientLink, scope: trio.CancelScope) -> None:
        hsm, server = record.hsm, record.server
        assert server is not None
        try:
            while True:
                try:
                    event = await hsm.receive()
                except RemoteProtocolError as exc:
                    record.end_reason = f"the HSM broke the protocol ({exc})"
                    await hsm.send_close_quietly(Close(close_code_for(exc), fit_text(str(exc))))
                    return
                if isinstance(event, OpBegin):
                    record.op_granted = False
                    record.request_sent()
                    await server.send(_for_server(event, server.connection.version))
                elif isinstance(event, OpEnd):
                    record.op_granted = False
                    record.unconfirmed_after = None
                    record.doing = ClientLinkActivity.IDLE
                    await server.send(event)
                elif isinstance(event, EndToEnd):
                    if server.connection.op_state is OpState.FREE:
                        continue  # pipelined behind a hold pedserver refused: Busy is coming
                    if record.op_granted:
                        record.request_sent()
                    await server.send(event)
                elif isinstance(event, Undelivered):
                    continue  # pipelined behind a hold we answered Busy to: discarded
                elif isinstance(event, Close):
                    record.end_reason = record.end_reason or "closed by the HSM"
                    await server.send_close_quietly(Close(CloseCode.NORMAL, event.text))
                    return
                elif isinstance(event, ConnectionLost):
                    # The HSM hangs up after pedserver's close too: keep the first reason.
                    record.end_reason = record.end_reason or "the HSM went away"
                    await server.send_close_quietly(Close(CloseCode.NORMAL, "HSM went away"))
                    return
        except LocalProtocolError:
            # pedserver closed the link while the HSM's frame was on its way: the other
            # relay task forwards pedserver's Close to the HSM and ends the link.
            await trio.sleep_forever()
        except LinkClosed as exc:
            record.end_reason = record.end_reason or "lost the connection to pedserver"
            await hsm.send_close_quietly(Close(
                close_code_for(exc),
                f"the connection to pedserver at {record.target} was lost; retry"))
        finally:
            scope.cancel()

    async def _server_to_hsm(self, record: ClientLink, scope: trio.CancelScope) -> None:
        hsm, server = record.hsm, record.server
        assert server is not None
        read_timeout = self.socket_read_rsp_timeout
        try:
            while True:
                try:
                    with trio.move_on_after(read_timeout) as timer:
                        event = await server.receive()
                except RemoteProtocolError as exc:
                    record.end_reason = f"pedserver broke the protocol ({exc})"
                    await server.send_close_quietly(Close(close_code_for(exc), fit_text(str(exc))))
                    await hsm.send_close_quietly(Close(
                        close_code_for(exc),
                        f"pedserver at {record.target} sent an invalid frame; retry"))
                    return
                if timer.cancelled_caught:
                    record.end_reason = f"nothing heard from pedserver for {read_timeout} s"
                    await server.send_close_quietly(Close(CloseCode.PEER_UNRESPONSIVE,
                                                          record.end_reason))
                    await hsm.send_close_quietly(Close(
                        CloseCode.PEER_UNRESPONSIVE,
                        f"pedserver at {record.target} stopped answering for {read_timeout} s "
                        "(network loss?); retry"))
                    return
                if not isinstance(event, ConnectionLost):
                    record.heard(event.nonce if isinstance(event, KeepaliveAck) else None)
                if isinstance(event, Keepalive):
                    await server.send(KeepaliveAck(event.nonce))
                elif isinstance(event, KeepaliveAck):
                    pass
                elif isinstance(event, OpGranted | Busy):
                    record.unconfirmed_after = None
                    if isinstance(event, OpGranted):
                        record.ops += 1
                        record.op_granted = True
                        record.doing = ClientLinkActivity.OPERATING
                    else:
                        record.doing = ClientLinkActivity.IDLE
                    try:
                        await hsm.send(event)
                    except LocalProtocolError:
                        if hsm.state is LinkState.CLOSED:
                            raise  # the HSM's link is gone: handled below
                        # pedserver answered an OP_BEGIN nobody sent: its fault, not the
                        # HSM's, and the link's PED lock can no longer be trusted.
                        record.end_reason = (
                            f"pedserver sent {type(event).__name__} with no operation asked")
                        await server.send_close_quietly(Close(
                            CloseCode.PROTOCOL_ERROR, record.end_reason))
                        await hsm.send_close_quietly(Close(
                            CloseCode.PROTOCOL_ERROR,
                            f"pedserver at {record.target} broke the link protocol "
                            f"({record.end_reason}); retry"))
                        return
                elif isinstance(event, EndToEnd):
                    record.request_arrived()  # the PED answered: pedserver has the request
                    await hsm.send(event)
                elif isinstance(event, Close):
                    # After the HSM's own close, pedserver's answering Close is not news.
                    record.end_reason = record.end_reason or (
                        f"pedserver closed it: {describe_close(event.code, event.text)}")
                    await hsm.send_close_quietly(Close(event.code, event.text))
                    return
                elif isinstance(event, ConnectionLost):
                    # Closing our side after the HSM closed ends this read too: keep the
                    # HSM's reason (a normal close is not a lost connection).
                    record.end_reason = record.end_reason or "pedserver's connection was lost"
                    await hsm.send_close_quietly(Close(
                        CloseCode.SERVER_GONE,
                        f"the connection to pedserver at {record.target} was lost "
                        "(pedserver stopped or the network failed); retry"))
                    return
        except (LinkClosed, LocalProtocolError):
            # The HSM is gone (or its link already closed by the other relay task).
            record.end_reason = record.end_reason or "the HSM went away"
            await server.send_close_quietly(Close(CloseCode.NORMAL, "HSM went away"))
        finally:
            scope.cancel()

    async def _keepalive(self, record: ClientLink, interval: int) -> None:
        server = record.server
        assert server is not None
        for nonce in itertools.count(1):
            await trio.sleep(interval)
            record.keepalive_nonce = nonce & 0xFFFFFFFF
            try:
                await server.send(Keepalive(record.keepalive_nonce))
            except (LinkClosed, PedError):
                return
