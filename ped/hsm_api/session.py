"""`open_ped_session` and `PedSession`: the trio shell around the HSM's end of ``ped.ops``.

Theory of operation
-------------------
`open_ped_session` takes a `ped.transport.FrameTransport` (a local device session or a
pedclient link; this module knows nothing about sockets), runs the RPV handshake and
yields a `PedSession`.  Each operation is request/response on the sans-IO
`ped.ops.HsmSideSession`:

* ``transport.begin_operation(wait=busy_wait)`` before the handshake and before every
  operation, ``end_operation()`` after (the PED serves one operation at a time); a
  transport that can tell the far end how long this side will wait (a pedclient link:
  `AnnouncesOpTimeout`) is told the operation's *op_timeout* first, so that pedserver
  ends a hold this side has given up on;
* *key_timeout* goes to the PED inside each request (the PED enforces the wait for a
  key and answers `KeyTimeout`); *op_timeout* bounds each whole operation here and ends
  it with `OperationTimeout`;
* when an operation times out, or the caller's task is cancelled, a CANCEL goes to the
  PED and the session waits up to *cancel_grace* seconds for the PED to end the
  operation, so that the session stays usable; if it does not, the session is broken
  (`SessionBroken`) and the caller opens a new one;
* sealing and sending happen under one lock (the channel's nonces must go out in order),
  and a send is shielded from cancellation so a frame is never half written;
* each hold's first frame (the HANDSHAKE_INIT, the request, the goodbye) goes with the
  hold's request where the transport pipelines (`ped.transport.PipelinesFrames`: one
  round trip per operation), else right after the grant, under the same lock.  If the
  PED is busy, the request sealed for that hold never reached it: the session keeps it,
  with a CANCEL sealed behind it, and the next operation first sends those same bytes
  again and drains the cancelled answer (a sealed frame is never lost and never sealed
  anew, so the channel's counters stay in step).

No nursery is used, so no ExceptionGroup reaches the caller.

Results have one owner, the caller: `read_secret` and `imprint` return a
`ped.hsm_api.results` `ReadResult` / `ImprintResult` (secrets in bytearrays) that the
caller wipes, best with ``with await ped.read_secret(...) as result:``.  The session
keeps no reference to a result it handed out (a session open for months holds nothing
per operation) and does not wipe it at close; it wipes only the answers nobody receives
(those of a cancelled or timed-out operation).

The RPV is not kept: the PSK is derived at once and wiped after the handshake.  The
ephemeral X25519 key is always fresh (forward secrecy): fixing it is possible only on the
sans-IO `ped.ops.HsmSideSession`, for test vectors.

``ped.hsm_api`` (the package) lists every error and type an integrator meets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol, runtime_checkable

import trio

from keys.colors import Color
from ped.channel.handshake import PedInfo
from ped.errors import LocalProtocolError, PedError
from ped.hsm_api.limits import (
    DEFAULT_BUSY_WAIT,
    DEFAULT_CANCEL_GRACE,
    DEFAULT_KEY_TIMEOUT,
    DEFAULT_OP_TIMEOUT,
    check_seconds,
    key_timeout_ms,
)
from ped.hsm_api.results import ImprintResult, ReadResult, hand_over
from ped.ops import events as ev
from ped.ops import messages
from ped.ops.errors import OperationError, OperationTimeout
from ped.ops.hsm_side import HsmSideSession, HsmSideState
from ped.ops.messages import CloseReason, Notice, ShowDone
from ped.transport import (
    FrameTransport,
    PedBusy,
    PipelinesFrames,
    TransportClosed,
    TransportError,
)
from ped.wire.framing import Frame


class SessionBroken(TransportClosed):
    """The session cannot go on (an operation could not be ended cleanly); open a new one.

    A `TransportClosed`, hence retriable and never a counted failed login.
    """


def _shielded_for(seconds: float) -> trio.CancelScope:
    """A scope shielded from outer cancellation that gives up after *seconds* (one
    scope: a login passes through several, and each costs a few microseconds)."""
    return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)


@runtime_checkable
class AnnouncesOpTimeout(Protocol):
    """A transport whose far end bounds a hold by the operation timeout it is told."""

    def announce_op_timeout(self, seconds: float) -> None: ...


def _announce(transport: FrameTransport, op_timeout: float) -> None:
    """Tell *transport* the operation timeout of the holds that follow, if it listens."""
    if isinstance(transport, AnnouncesOpTimeout):
        transport.announce_op_timeout(op_timeout)


class PedSession:
    """An established end-to-end session with a PED.  Made by `open_ped_session`.

    One operation at a time: a second call from another task waits for the first to end.
    Each `ReadResult` and `ImprintResult` it returns is the caller's to wipe.
    """

    def __init__(
        self,
        transport: FrameTransport,
        hsm: HsmSideSession,
        *,
        op_timeout: float,
        busy_wait: float,
        cancel_grace: float,
        on_notice: Callable[[Notice], None] | None,
    ) -> None:
        self._transport = transport
        self._hsm = hsm
        self._op_timeout = op_timeout
        self._busy_wait = busy_wait
        self._cancel_grace = cancel_grace
        self._on_notice = on_notice
        self._op_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._broken: str | None = None
        self._closed = False
        #: Sealed frames a busy PED never got (a request and its CANCEL): sent again,
        #: unchanged, at the start of the next operation.
        self._undelivered: tuple[Frame, ...] = ()

    def __repr__(self) -> str:
        return f"PedSession(hsm_serial={self._hsm.hsm_serial!r}, state={self._hsm.state.value})"

    @property
    def ped_info(self) -> PedInfo | None:
        """What the PED said about itself in the handshake (model, serial, firmware)."""
        return self._hsm.ped_info

    @property
    def usable(self) -> bool:
        """False once the session is closed or broken: open a new one then."""
        return not self._closed and self._broken is None and self._ready()

    def _ready(self) -> bool:
        # Undelivered frames leave the sans-IO session awaiting their (cancelled)
        # operation; the next operation delivers and drains them first.
        return self._hsm.state is HsmSideState.READY or (
            bool(self._undelivered) and self._hsm.state is HsmSideState.AWAITING)

    # ---- public operations ---------------------------------------------------------

    async def read_secret(
        self,
        color: Color,
        keyset_id: bytes | None = None,
        *,
        label: str = "",
        key_timeout: float | None = None,
        op_timeout: float | None = None,
    ) -> ReadResult:
        """Have the PED read a *color* keyset (M of N and PIN on the PED); its secret.

        *keyset_id*, if given, is the keyset the HSM expects (16 bytes): the PED refuses
        others with `KeysetMismatch` (the HSM must still check the secret itself).
        *label* is shown on the PED screen (at most 128 UTF-8 bytes; control characters
        become "?").  *key_timeout* and *op_timeout* (seconds) override the session's for
        this operation only.
        ``result.secret`` (32 bytes) is yours to wipe: ``with await ped.read_secret(...)
        as result:`` wipes it when the block ends.
        """
        timeout_ms = None if key_timeout is None else key_timeout_ms(key_timeout)
        result = await self._run(
            lambda: self._hsm.read_secret(
                color, keyset_id=keyset_id, label=label, key_timeout_ms=timeout_ms
            ),
            op_timeout,
        )
        assert isinstance(result, ReadResult)
        return result

    async def imprint(
        self,
        color: Color,
        *,
        new_secret: bytes | bytearray | None = None,
        allow_reuse: bool = False,
        label: str = "",
        key_timeout: float | None = None,
        op_timeout: float | None = None,
    ) -> ImprintResult:
        """Imprint *color* keys with *new_secret*, or (if *allow_reuse*) an existing keyset.

        ``result.secret`` is the login secret (what reading this keyset will return)
        whenever it differs from *new_secret*: when the operator reused a keyset
        (``result.reused``) or set a PED PIN (``result.pin``).  The HSM must adopt it.
        ``None`` means the login secret is *new_secret*.  *new_secret* is 32 bytes (the
        caller keeps and wipes it); without it the operator must reuse a keyset, so
        *allow_reuse* must be True.  The result is yours to wipe (``with``, ``wipe()``).
        """
        timeout_ms = None if key_timeout is None else key_timeout_ms(key_timeout)
        result = await self._run(
            lambda: self._hsm.imprint(
                color,
                new_secret=new_secret,
                allow_reuse=allow_reuse,
                label=label,
                key_timeout_ms=timeout_ms,
            ),
            op_timeout,
        )
        assert isinstance(result, ImprintResult)
        return result

    async def show_message(self, text: str, *, op_timeout: float | None = None) -> None:
        """Show *text* on the PED screen (at most 512 UTF-8 bytes; newlines kept)."""
        await self._run(lambda: self._hsm.show_message(text), op_timeout)

    async def cancel(self) -> None:
        """Cancel the operation in progress (from another task), if any.

        The operation then ends with `OperationCancelled`, or with its result if the PED
        finished first.
        """
        if self._closed or self._broken is not None:
            return
        async with self._send_lock:
            frame = self._hsm.cancel()
            if frame is not None:
                await self._send_shielded(frame)

    async def aclose(self) -> None:
        """Say goodbye to the PED (best effort) and forget the session's keys.

        Results already handed out stay the caller's (this does not wipe them).

        Call it once operations have finished: an operation still running in another
        task then fails with a `LocalProtocolError`.
        """
        if self._closed:
            return
        self._closed = True
        try:
            with _shielded_for(self._cancel_grace):
                if self._broken is None and self._hsm.state is HsmSideState.READY:
                    async with self._send_lock:
                        frame = self._hsm.close(CloseReason.NORMAL)
                        if frame is not None:
                            await self._hold_with([frame], wait=0)
                            await self._transport.end_operation()
        except PedError:
            pass  # the PED is gone or busy: nothing to say goodbye to
        finally:
            self._hsm.close()

    # ---- machinery -----------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise LocalProtocolError("this PED session is closed; open a new one")
        if self._broken is not None:
            raise SessionBroken(f"this PED session is unusable ({self._broken}); open a new one")
        if self._hsm.state is HsmSideState.CLOSED:
            raise TransportClosed("the PED closed this session; open a new one")
        if not self._ready():
            raise SessionBroken(
                f"this PED session is unusable (state {self._hsm.state.value}); open a new one"
            )

    async def _send_shielded(self, frame: Frame) -> None:
        # A frame is either sent whole or the session is broken: never half a frame.
        with _shielded_for(self._cancel_grace) as scope:
            await self._transport.send(frame)
        if scope.cancelled_caught:
            self._broken = "a frame could not be sent in time"
            raise SessionBroken("sending to the PED timed out; open a new session")

    async def _hold_with(self, frames: Sequence[Frame], *, wait: float) -> None:
        """Take the PED and send *frames* as the hold's first frames: behind the request
        where the transport pipelines, else once granted (shielded, as every send).
        Call with the send lock held.  `PedBusy` means the PED got none of them."""
        transport = self._transport
        if isinstance(transport, PipelinesFrames) and transport.pipelines:
            await transport.begin_operation_with(frames, wait=wait)
            return
        await transport.begin_operation(wait=wait)
        try:
            for frame in frames:
                await self._send_shielded(frame)
        except BaseException:
            with _shielded_for(self._cancel_grace):
                try:
                    await transport.end_operation()
                except TransportError:
                    pass
            raise

    async def _begin_with(self, make_frame: Callable[[], Frame]) -> None:
        """Seal the hold's first frame and begin the hold with it.  The send lock is held
        until the answer, so a `cancel` from another task cannot seal a frame that would
        overtake it, or that a busy PED would then never get."""
        async with self._send_lock:
            frame = make_frame()
            try:
                await self._hold_with([frame], wait=self._busy_wait)
            except PedBusy:
                if self._hsm.state is HsmSideState.AWAITING:
                    cancel = self._hsm.cancel()
                    self._undelivered = (frame, *([cancel] if cancel else []))
                raise

    async def _deliver_undelivered(self) -> None:
        """Send the frames a busy PED never got (the same bytes) in a hold of their own
        and drain the cancelled operation's answer: the channel is in step again."""
        if not self._undelivered:
            return
        async with self._send_lock:
            await self._hold_with(self._undelivered, wait=self._busy_wait)
            self._undelivered = ()
        try:
            await self._abandon()  # its CANCEL went already: this drains the answer
        finally:
            with _shielded_for(self._cancel_grace):
                try:
                    await self._transport.end_operation()
                except TransportError:
                    self._broken = self._broken or "the PED could not be released"
        self._check_usable()

    async def _run(
        self, make_frame: Callable[[], Frame], op_timeout: float | None
    ) -> ReadResult | ImprintResult | ShowDone:
        if op_timeout is not None:
            check_seconds("op_timeout", op_timeout)
        async with self._op_lock:
            self._check_usable()
            _announce(self._transport, op_timeout or self._op_timeout)
            await self._deliver_undelivered()
            await self._begin_with(make_frame)
            try:
                return await self._exchange(op_timeout or self._op_timeout)
            finally:
                with _shielded_for(self._cancel_grace):
                    try:
                        await self._transport.end_operation()
                    except TransportError:
                        self._broken = self._broken or "the PED could not be released"

    async def _exchange(self, op_timeout: float) -> ReadResult | ImprintResult | ShowDone:
        """The request went with the hold: wait for its answer."""
        try:
            with trio.move_on_after(op_timeout):
                return await self._await_final()
            await self._abandon()
            raise OperationTimeout(
                f"no answer within {op_timeout:g} s; the operation was cancelled"
            )
        except trio.Cancelled:
            await self._abandon()
            raise
        except PedError:
            if self._hsm.state in (HsmSideState.FAILED, HsmSideState.CLOSED):
                self._broken = self._broken or "the channel failed"
            raise

    async def _await_final(self) -> ReadResult | ImprintResult | ShowDone:
        while True:
            try:
                frame = await self._transport.receive()
            except TransportError:
                self._broken = "the path to the PED closed"
                self._hsm.close()
                raise
            for event in self._hsm.receive_frame(frame):
                if isinstance(event, ev.ProgressNotice):
                    if self._on_notice is not None:
                        self._on_notice(event.notice)
                elif isinstance(event, ev.OperationSucceeded):
                    if isinstance(event.result, messages.ReadResult | messages.ImprintResult):
                        return hand_over(event.result)
                    return event.result
                elif isinstance(event, ev.OperationFailed):
                    raise event.error
                elif isinstance(event, ev.PedClosed):
                    raise TransportClosed(
                        f"the PED ended the session ({event.reason.name.lower()})"
                        + (f": {event.text}" if event.text else "")
                    )

    async def _abandon(self) -> None:
        """Cancel the outstanding operation and drain its answer, within the grace time."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._cancel_grace) as scope:
                try:
                    async with self._send_lock:
                        frame = self._hsm.cancel()
                        if frame is not None:
                            await self._transport.send(frame)
                    while self._hsm.state is HsmSideState.AWAITING:
                        try:
                            result = await self._await_final()
                        except OperationError:
                            continue
                        if isinstance(result, ReadResult | ImprintResult):
                            result.wipe()
                except PedError:
                    self._broken = self._broken or "the cancelled operation failed"
            if scope.cancelled_caught:
                self._broken = "the PED did not end a cancelled operation"
                self._hsm.close()


@asynccontextmanager
async def open_ped_session(
    transport: FrameTransport,
    *,
    rpv: bytes | bytearray,
    hsm_serial: str,
    key_timeout: float = DEFAULT_KEY_TIMEOUT,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    busy_wait: float = DEFAULT_BUSY_WAIT,
    cancel_grace: float = DEFAULT_CANCEL_GRACE,
    on_notice: Callable[[Notice], None] | None = None,
) -> AsyncIterator[PedSession]:
    """Run the RPV handshake over *transport*; yield a `PedSession`; close it on exit.

    *rpv*: the HSM's Remote PED Vector, 32 bytes (``LOCAL_RPV`` for a cabled PED in its
    local mode).  Not kept: the caller wipes its copy when it likes, even at once after
    the handshake.  *hsm_serial*: 1-64 printable ASCII characters without spaces; it
    crosses the relays in the clear so the PED can name the HSM that asks.
    *key_timeout*, *op_timeout*, *busy_wait*, *cancel_grace*: seconds, see
    `ped.hsm_api.limits` and docs/integrating.md.  *on_notice* is called synchronously,
    in the operation's task, with each progress `Notice` of the PED; it must return
    quickly and must not raise.

    A bad argument raises `LocalProtocolError` before anything is sent.  The caller
    keeps owning *transport* (this does not close it).  A handshake that times out
    leaves the transport in an unknown state: close it.
    """
    check_seconds("op_timeout", op_timeout)
    check_seconds("cancel_grace", cancel_grace)
    check_seconds("busy_wait", busy_wait, zero_ok=True)
    hsm = HsmSideSession(
        rpv=rpv,
        hsm_serial=hsm_serial,
        key_timeout_ms=key_timeout_ms(key_timeout),
    )
    session = PedSession(
        transport,
        hsm,
        op_timeout=op_timeout,
        busy_wait=busy_wait,
        cancel_grace=cancel_grace,
        on_notice=on_notice,
    )
    try:
        await _handshake(session, transport, hsm, op_timeout, busy_wait, cancel_grace)
        yield session
    finally:
        await session.aclose()


async def _handshake(
    session: PedSession,
    transport: FrameTransport,
    hsm: HsmSideSession,
    op_timeout: float,
    busy_wait: float,
    cancel_grace: float,
) -> None:
    _announce(transport, op_timeout)
    await session._begin_with(hsm.start_handshake)  # a busy PED never saw the INIT
    try:
        with trio.move_on_after(op_timeout) as scope:
            events = hsm.receive_frame(await transport.receive())
            assert events and isinstance(events[0], ev.ChannelReady)
        if scope.cancelled_caught:
            hsm.close()
            raise OperationTimeout(
                f"the PED did not answer the handshake within {op_timeout:g} s "
                "(no orange key presented?)"
            )
    finally:
        with _shielded_for(cancel_grace):
            try:
                await transport.end_operation()
            except TransportError:
                pass
