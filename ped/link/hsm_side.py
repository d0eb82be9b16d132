"""The HSM's way to a remote PED: `connect_via_pedclient` -> a `FrameTransport`.

An HSM on the HSM host connects to pedclient's local endpoint (a Unix socket), asks
"connect me to pedserver A:P" and, once pedclient says the link is up, holds a
`PedclientTransport`: begin/end an operation (pedserver holds the PED's lock), send and
receive end-to-end frames.  Nothing here sees inside those frames.

Errors (never a counted failed login):

* `ConnectFailed`: pedclient not running, pedserver refused/unreachable/timed out...;
  the message says what to check.  A `ConnectUnavailable` is retriable (a
  `TransportError`); a `ConnectRejected` (a bad request, an incompatible pedserver) is
  not, and is the one error here that is not a `TransportError`.
* `PedBusy`: the PED serves another HSM's operation (the message names the holder).
* `LinkClosed`: pedclient or pedserver went away, the link idled out, the PED left.

The transport reads inline (no background task): ``receive`` and ``begin_operation``
each read until they get what they wait for; an end-to-end frame that arrives while
``begin_operation`` waits is kept for the next ``receive``.  On a link of version 3
(`PIPELINE_VERSION`) ``begin_operation_with`` sends a hold's first frames behind its
OP_BEGIN (`ped.transport.PipelinesFrames`): one round trip per PED operation.
Between operations nothing would read, so a link that pedserver or pedclient closed
would go unnoticed until the next operation: an HSM that keeps a link open runs
``wait_closed`` in a task of its own, which reads while no operation is in progress
(an operation takes over at once) and returns when the link ends, with
`PedclientTransport.ended` saying who ended it and why.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import trio

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.link.connection import ConnectionLost, Hop, LinkConnection, LinkState, OpState, Side
from ped.link.errors import (
    ConnectUnavailable,
    LinkClosed,
    LinkEnd,
    connect_failure,
    describe_close,
    end_of_close,
)
from ped.link.messages import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PORT,
    MAX_OP_TIMEOUT,
    MAX_OP_WAIT_MS,
    OP_TIMEOUT_VERSION,
    PIPELINE_VERSION,
    Busy,
    Close,
    ConnectCode,
    ConnectRequest,
    ConnectResult,
    EndToEnd,
    OpBegin,
    OpEnd,
    OpGranted,
)
from ped.link.stream import LinkStream
from ped.transport import PedBusy
from ped.wire.framing import Frame
from ped.wire.types import E2E_RANGE, CloseCode

#: How long we wait for pedserver's answer to OpBegin beyond the wait we asked for.
ANSWER_MARGIN = 30.0
#: pedclient's local endpoint, in its home directory.
PEDCLIENT_SOCKET_NAME = "pedclient.sock"


def default_pedclient_socket(home: str | os.PathLike[str] | None = None) -> Path:
    """Where pedclient listens for HSMs: HOME/pedclient.sock, HOME being *home*, else
    ``PEDCLIENT_HOME``, else pedclient's default home (see `ped.daemon.home`)."""
    from ped.daemon.home import resolve_home

    return resolve_home(home, "pedclient", create=False) / PEDCLIENT_SOCKET_NAME


class PedclientTransport:
    """A `ped.transport.FrameTransport` over a link through pedclient and pedserver."""

    def __init__(self, link: LinkStream, result: ConnectResult, target: str) -> None:
        self._link = link
        self.result = result  # version, idle timeout, pedserver name, its PED
        self.target = target
        self._pending: deque[Frame] = deque()
        self._receive_lock = trio.Lock()
        self._closed: LinkClosed | None = None
        #: who ended the link and why, once it ended (see `wait_closed`)
        self.ended: LinkEnd | None = None
        # Set while no operation is in progress: `wait_closed` reads only then.
        self._between_ops = trio.Event()
        self._between_ops.set()
        self._watch_scope: trio.CancelScope | None = None
        self._op_timeout: int | None = None

    def __repr__(self) -> str:
        return f"PedclientTransport(target={self.target!r}, state={self._link.state.value})"

    @property
    def closed_reason(self) -> str | None:
        """Why the link ended, once this transport knows it did (else None)."""
        return None if self._closed is None else str(self._closed)

    @property
    def pipelines(self) -> bool:
        """Whether a hold's first frames may go with its OP_BEGIN (link version 3 on)."""
        return self.result.version >= PIPELINE_VERSION

    @property
    def operation_held(self) -> bool:
        return self._link.connection.op_state is OpState.HELD

    async def wait_closed(self) -> LinkEnd:
        """Return once the link has ended, saying who ended it and why.

        Reads the link while no operation is in progress (a close, a lost pedclient),
        and steps aside at once when one begins; never ends the link itself.
        """
        while self._closed is None:
            await self._between_ops.wait()
            with trio.CancelScope() as scope:
                self._watch_scope = scope
                try:
                    async with self._receive_lock:
                        if self._closed is not None or not self._between_ops.is_set():
                            continue
                        event = await self._next()
                        if isinstance(event, EndToEnd):
                            self._pending.append(event.frame)  # a late frame: for receive
                except LinkClosed:
                    pass
                finally:
                    self._watch_scope = None
        return self.ended or LinkEnd("this HSM", "closed", str(self._closed))

    def _operation_starts(self) -> None:
        self._between_ops = trio.Event()
        if self._watch_scope is not None:
            self._watch_scope.cancel()

    def _operation_over(self) -> None:
        self._between_ops.set()

    def announce_op_timeout(self, seconds: float) -> None:
        """The HSM's operation timeout (pedo) for the next operations: each OP_BEGIN
        announces it (whole seconds, rounded up) so that pedserver ends a hold the HSM
        has given up on; not on a version 1 link, whose pedserver would refuse it."""
        if self.result.version < OP_TIMEOUT_VERSION:
            return
        self._op_timeout = min(max(math.ceil(seconds), 1), MAX_OP_TIMEOUT)

    # -------------------------------------------------------------- FrameTransport

    async def send(self, frame: Frame) -> None:
        self._check_open()
        if frame.type not in E2E_RANGE:
            raise LocalProtocolError(f"frame type 0x{frame.type:02x} is not end-to-end")
        if not self.operation_held:
            raise LocalProtocolError("call begin_operation() before sending to the PED")
        await self._send(EndToEnd(frame))

    async def receive(self) -> Frame:
        async with self._receive_lock:
            if self._pending:
                return self._pending.popleft()
            self._check_open()
            while True:
                event = await self._next()
                if isinstance(event, EndToEnd):
                    return event.frame
                # OpGranted/Busy outside begin_operation cannot happen (the state machine
                # refuses them); anything else was handled by _next.

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.begin_operation_with((), wait=wait)

    async def begin_operation_with(self, frames: Sequence[Frame], *, wait: float = 0.0) -> None:
        """`begin_operation` with *frames* behind the OP_BEGIN (see `ped.transport`)."""
        if frames and not self.pipelines:
            raise LocalProtocolError(
                f"link version {self.result.version} cannot pipeline frames behind OP_BEGIN")
        if any(frame.type not in E2E_RANGE for frame in frames):
            raise LocalProtocolError("only end-to-end frames go behind OP_BEGIN")
        self._check_open()
        wait_ms = min(max(int(wait * 1000), 0), MAX_OP_WAIT_MS)
        if self._link.connection.op_state is not OpState.FREE:
            raise LocalProtocolError("an operation is already held or requested on this link")
        self._operation_starts()
        granted = False
        try:
            await self._begin(wait_ms, tuple(frames))
            granted = True
        finally:
            if not granted:
                self._operation_over()

    async def _begin(self, wait_ms: int, frames: tuple[Frame, ...]) -> None:
        async with self._receive_lock:
            await self._send(OpBegin(wait_ms, self._op_timeout), *map(EndToEnd, frames))
            try:
                with trio.fail_after(wait_ms / 1000 + ANSWER_MARGIN):
                    while True:
                        event = await self._next()
                        if isinstance(event, OpGranted):
                            return
                        if isinstance(event, Busy):
                            holder = f" (held by {event.holder})" if event.holder else ""
                            raise PedBusy(
                                f"the PED at {self.target} is busy with another HSM's "
                                f"operation{holder}; try again when it is free",
                                undelivered=frames,  # pedserver discarded them
                            )
                        if isinstance(event, EndToEnd):
                            self._pending.append(event.frame)
            except trio.TooSlowError:
                await self._fail(
                    f"pedserver at {self.target} did not answer the operation request within "
                    f"{wait_ms / 1000 + ANSWER_MARGIN:g} s; the link was closed, connect again"
                )
            except BaseException:
                # Cancelled while the answer was outstanding: the link's state is unknown.
                if self._closed is None and self._op_requested():
                    await self._abandon()
                raise

    def _op_requested(self) -> bool:
        # A call, not an inline test: the state moved while we awaited, and a type checker
        # would still narrow it to the FREE it was checked to be before the await.
        return self._link.connection.op_state is OpState.REQUESTED

    async def end_operation(self) -> None:
        try:
            if self._closed is not None or self._link.state is not LinkState.OPEN:
                return  # the link is gone; pedserver released the PED when it saw that
            if self._link.connection.op_state is OpState.HELD:
                try:
                    await self._send(OpEnd())
                except LinkClosed:
                    pass
        finally:
            self._operation_over()

    async def aclose(self) -> None:
        if self._closed is None:
            self._closed = LinkClosed(f"the link to {self.target} was closed by this HSM",
                                      CloseCode.NORMAL)
            self.ended = LinkEnd("this HSM", "disconnected", str(self._closed))
        self._operation_over()
        await self._link.send_close_quietly(Close(CloseCode.NORMAL, "HSM disconnect"))

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed is not None:
            raise LinkClosed(str(self._closed), self._closed.code)

    async def _send(self, message: EndToEnd | OpBegin | OpEnd, *more: EndToEnd) -> None:
        try:
            await self._link.send_many([message, *more])
        except LinkClosed:
            if self.ended is None:
                self.ended = LinkEnd(
                    "pedclient", "it went away: its socket closed (stopped or killed?)",
                    "the connection to pedclient was lost while sending",
                )
            await self._fail(f"pedclient went away; the link to {self.target} is lost, retry")

    async def _next(self) -> EndToEnd | OpGranted | Busy:
        try:
            event = await self._link.receive()
        except RemoteProtocolError as exc:
            self.ended = LinkEnd("this HSM", "pedclient sent something invalid", str(exc))
            await self._fail(f"pedclient sent something invalid ({exc}); the link was closed",
                             send_close=True)
        if isinstance(event, Close):
            self.ended = end_of_close(event.code, event.text)
            await self._fail(
                f"link to {self.target} closed: {describe_close(event.code, event.text)}",
                code=event.code,
            )
        if isinstance(event, ConnectionLost):
            self.ended = LinkEnd(
                "pedclient", "it went away: its socket closed (stopped or killed?)",
                "pedclient's socket closed without a word",
            )
            await self._fail(
                f"pedclient went away (its socket closed); the link to {self.target} is lost, "
                "retry once pedclient runs",
                code=CloseCode.SERVER_GONE,
            )
        if isinstance(event, EndToEnd | OpGranted | Busy):
            return event
        await self._fail(f"unexpected {type(event).__name__} from pedclient", send_close=True)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _abandon(self) -> None:
        self._closed = LinkClosed(
            f"the operation request to {self.target} was abandoned; connect again"
        )
        self.ended = LinkEnd("this HSM", "an operation request was abandoned", str(self._closed))
        self._operation_over()
        await self._link.send_close_quietly(Close(CloseCode.NORMAL, "operation abandoned"))

    async def _fail(
        self, message: str, *, code: CloseCode | None = None, send_close: bool = False
    ) -> None:
        error = LinkClosed(message, code)
        self._closed = error
        if self.ended is None:
            self.ended = LinkEnd("this HSM", "the link failed", message)
        self._operation_over()
        if send_close:
            await self._link.send_close_quietly(Close(CloseCode.PROTOCOL_ERROR, "bad frame"))
        else:
            await self._link.aclose()
        raise error


async def connect_via_pedclient(
    socket_path: str | os.PathLike[str],
    host: str | None,
    port: int = DEFAULT_PORT,
    *,
    peer: str | None = None,
    timeout: float = 10.0,
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
    hsm_name: str = "",
) -> PedclientTransport:
    """Ask pedclient (at *socket_path*) for a link to pedserver *host*:*port* (or, in the
    later peer-to-peer mode, to the registered *peer*); return the transport once it is up.

    *timeout* bounds the whole connect (pedclient's TCP connect and link hello included).
    """
    request = ConnectRequest(
        host=host or "",
        port=port,
        peer=peer or "",
        idle_timeout=idle_timeout,
        hsm_name=hsm_name,
        connect_timeout_ms=max(1, int(timeout * 1000)),
    )
    request.payload()  # check the request before touching any socket (LocalProtocolError)
    target = request.target
    path = os.fspath(socket_path)
    try:
        stream = await trio.open_unix_socket(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ConnectUnavailable(
            f"pedclient is not running on this host (nothing answers on {path}); "
            "start it with `pedclient mode start`, or check its --home"
        ) from None
    except PermissionError:
        raise ConnectUnavailable(
            f"no permission to use pedclient's socket {path}; run as the user who owns it"
        ) from None
    except OSError as exc:
        raise ConnectUnavailable(f"cannot reach pedclient at {path}: {exc.strerror}") from None
    link = LinkStream(stream, LinkConnection(Hop.LOCAL, Side.INITIATOR))
    try:
        with trio.fail_after(timeout + 5.0):
            await link.send(request)
            event = await link.receive()
    except trio.TooSlowError:
        await link.aclose()
        raise ConnectUnavailable(
            f"pedclient did not answer within {timeout + 5:g} s while connecting to {target}",
            ConnectCode.TIMEOUT,
        ) from None
    except (LinkClosed, RemoteProtocolError) as exc:
        await link.aclose()
        raise ConnectUnavailable(
            f"pedclient broke off while connecting to {target}: {exc}"
        ) from None
    except BaseException:
        await link.aclose()
        raise
    if isinstance(event, ConnectResult):
        if event.ok:
            return PedclientTransport(link, event, target)
        await link.aclose()
        raise connect_failure(event.text or f"pedclient could not connect to {target}", event.code)
    await link.aclose()
    if isinstance(event, Close):
        raise ConnectUnavailable(
            f"pedclient closed the request: {describe_close(event.code, event.text)}"
        )
    raise ConnectUnavailable(f"pedclient closed the connection while connecting to {target}")
