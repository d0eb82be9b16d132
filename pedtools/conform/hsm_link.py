"""The link end of `pedconform hsm`: a pedserver-like TCP listener and a pedclient-like socket.

An HSM under test reaches the suite's PED (`faulty_ped.FaultyPed`) in one of two ways:

* through its own pedclient, which dials `--listen IP:PORT`: the suite answers the remote
  hop as pedserver does (LINK_HELLO -> LINK_WELCOME, docs/protocol/link.md 2 and 5);
* directly, on the Unix socket `--pedclient PATH`: the suite answers the local hop as
  pedclient does (CONNECT_REQUEST -> CONNECT_RESULT, link.md 3), whatever address the
  HSM asks for.

On both, OP_BEGIN is always granted (no other HSM competes for this PED), KEEPALIVEs are
answered, and end-to-end frames go to one `faulty_ped.DeviceSide` per link.  The link's
sans-IO `LinkConnection` checks the HSM's side of the link protocol: an end-to-end frame
outside a hold, for instance, is recorded as ``link-error`` (and the link closed with
PROTOCOL_ERROR, as pedserver would), and the suite fails the case it happened in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import trio

from ped.errors import PedError, RemoteProtocolError
from ped.link.connection import ConnectionLost, Hop, LinkConnection, Side, negotiate_version
from ped.link.messages import (
    LINK_VERSION_MAX,
    Close,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    DeviceSummary,
    EndToEnd,
    Keepalive,
    KeepaliveAck,
    LinkHello,
    LinkRefused,
    LinkWelcome,
    OpBegin,
    OpEnd,
    OpGranted,
    RefuseCode,
)
from ped.link.stream import LinkStream
from ped.wire.framing import Frame
from ped.wire.types import CloseCode
from pedtools.conform.faulty_ped import PED_INFO, DeviceSide, FaultyPed

SERVER_NAME = "pedconform"
#: What the suite says about its PED in LINK_WELCOME / CONNECT_RESULT (public facts).
DEVICE = DeviceSummary(True, PED_INFO.model, PED_INFO.firmware, PED_INFO.serial, "remote")


class LinkServer:
    """Serves every link an HSM opens to the suite's PED; see the module docstring."""

    def __init__(self, ped: FaultyPed) -> None:
        self.ped = ped
        self.wire = ped.wire
        self._open: dict[int, LinkStream] = {}

    async def serve_tcp(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen as pedserver; reports the port bound (useful with port 0)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        task_status.started(int(bound))
        await trio.serve_listeners(self._serve_remote, listeners)

    async def serve_unix(
        self, path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen as pedclient's local endpoint on *path* (owner-only)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        await sock.bind(os.fspath(path))
        os.chmod(path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._serve_local, [listener])
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    async def _serve_remote(self, stream: trio.SocketStream) -> None:
        await self._serve(stream, Hop.REMOTE)

    async def _serve_local(self, stream: trio.SocketStream) -> None:
        await self._serve(stream, Hop.LOCAL)

    async def _serve(self, stream: trio.abc.Stream, hop: Hop) -> None:
        self.wire.links += 1
        link_id = self.wire.links
        link = LinkStream(stream, LinkConnection(hop, Side.RESPONDER))
        self._open[link_id] = link
        self.wire.add(link_id, "link-open", hop.value)
        try:
            async with trio.open_nursery() as nursery:
                if await self._open_link(link, hop, link_id):
                    await self._run(link, link_id, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._open.pop(link_id, None)
            await link.aclose()

    async def _open_link(self, link: LinkStream, hop: Hop, link_id: int) -> bool:
        try:
            with trio.fail_after(10):
                first = await link.receive()
        except (trio.TooSlowError, PedError) as exc:
            self.wire.add(link_id, "link-error", f"no valid opening frame: {exc}")
            return False
        if isinstance(first, LinkHello):
            version = negotiate_version(first)
            if version is None:
                await link.send_close_quietly(
                    LinkRefused(RefuseCode.UNSUPPORTED_VERSION, "no link version in common")
                )
                self.wire.add(link_id, "link-error", "no link version in common")
                return False
            await link.send(LinkWelcome(version, first.idle_timeout, 30, SERVER_NAME, DEVICE))
            self.wire.add(link_id, "link-up", f"version {version}")
            return True
        if isinstance(first, ConnectRequest):
            await link.send(
                ConnectResult(
                    ConnectCode.OK, "connected to the pedconform PED", LINK_VERSION_MAX,
                    first.idle_timeout, SERVER_NAME, DEVICE,
                )
            )
            self.wire.add(link_id, "link-up", f"version {LINK_VERSION_MAX}")
            return True
        self.wire.add(link_id, "link-error", f"opened with {type(first).__name__}")
        return False

    async def _run(self, link: LinkStream, link_id: int, nursery: trio.Nursery) -> None:
        async def send(frame: Frame) -> None:
            with contextlib.suppress(PedError):
                await link.send(EndToEnd(frame))

        async def drop() -> None:
            await link.aclose()  # no CLOSE: the connection is simply gone

        device = DeviceSide(self.ped, link_id, nursery, send, drop)
        try:
            while True:
                event = await link.receive()
                if isinstance(event, ConnectionLost):
                    self.wire.add(link_id, "link-closed", "the HSM side closed")
                    await device.receive_eof()
                    return
                if isinstance(event, OpBegin):
                    timeout = "" if event.op_timeout is None else f"{event.op_timeout}"
                    self.wire.add(link_id, "op-begin", timeout)
                    await link.send(OpGranted())
                elif isinstance(event, OpEnd):
                    self.wire.add(link_id, "op-end")
                elif isinstance(event, Keepalive):
                    await link.send(KeepaliveAck(event.nonce))
                elif isinstance(event, Close):
                    self.wire.add(link_id, "link-closed", f"CLOSE {event.code.name}")
                    await device.receive_eof()
                    return
                elif isinstance(event, EndToEnd):
                    await device.receive(event.frame)
        except RemoteProtocolError as exc:
            self.wire.add(link_id, "link-error", str(exc))
            await link.send_close_quietly(Close(CloseCode.PROTOCOL_ERROR, str(exc)[:200]))
            await device.receive_eof()
        except PedError as exc:  # our stream went away (a dropped link among them)
            self.wire.add(link_id, "link-closed", str(exc))
            await device.receive_eof()
