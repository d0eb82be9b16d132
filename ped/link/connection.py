"""Sans-IO state machines for both link hops.

Theory of operation
-------------------
Two hops, one machine.  Each hop has an *initiator* and a *responder*:

    hop      initiator   responder   first frames
    REMOTE   pedclient   pedserver   LinkHello  -> LinkWelcome | LinkRefused
    LOCAL    HSM         pedclient   ConnectRequest -> ConnectResult(ok | error)

(In peer-to-peer mode pedserver dials the TCP connection, but pedclient is still the
link initiator: who dials is a transport matter, not a protocol one.)

Once OPEN, both hops carry the same operation protocol and relayed end-to-end frames::

    initiator                     responder
    OpBegin(wait)      ->
    [EndToEnd frames   ->]                             (version 3: pipelined, see below)
                       <-         OpGranted  |  Busy(holder)
    EndToEnd frames    <->        EndToEnd frames      (initiator only while granted)
    OpEnd              ->
    Keepalive / KeepaliveAck  (REMOTE hop only, either direction)
    Close(code, text)  <->        (either side, any time; last frame)

`LinkConnection` tracks both sides' view of the state (as h11 does): ``send(message)``
checks that *we* may send it (`LocalProtocolError` if not) and returns the bytes;
``receive_data(bytes)`` buffers what the peer sent (``b""`` = end of stream) and
``next_event()`` returns messages, a `ConnectionLost` at end of stream, or `NEED_DATA`
(``ped.wire.framing``) when it needs more bytes.  Whatever the peer got wrong is a
`RemoteProtocolError` and the connection is finished; every other connection carries on.

From link version 3 (`PIPELINE_VERSION`) the initiator may send end-to-end frames
right behind its OpBegin, before the answer: one round trip per PED operation.  The
responder delivers them if it grants the hold and discards them if it answers Busy (its
own view is then DISCARDING until the next OpBegin, and each such frame comes out of
`next_event` as `Undelivered`, never as an `EndToEnd`); the initiator keeps what it sent
and sends the same bytes again in its next hold (a sealed frame is never sealed anew).

The transitions are data (`LINK_TRANSITIONS`, `OP_TRANSITIONS`, `OP_MIN_VERSION`,
`BUSY_SENT`) so that tests and the protocol document can enumerate them.  Version
negotiation lives here too: a welcome must choose a version both ends speak, never
below our minimum, and an idle timeout no longer than ours (the shorter end wins).
"""

from __future__ import annotations

import enum

import attrs

from ped.errors import LocalProtocolError, RemoteProtocolError
from ped.link.messages import (
    LINK_VERSION_MAX,
    LINK_VERSION_MIN,
    OP_TIMEOUT_VERSION,
    PIPELINE_VERSION,
    Close,
    ConnectRequest,
    ConnectResult,
    EndToEnd,
    LinkHello,
    LinkRefused,
    LinkType,
    LinkWelcome,
    LocalType,
    Message,
    OpBegin,
    decode,
    encode,
)
from ped.wire.framing import MAX_PAYLOAD, NEED_DATA, Frame, FrameDecoder, NeedData, encode_frame
from ped.wire.types import E2E_RANGE


class Hop(enum.Enum):
    REMOTE = "remote"  # pedclient <-> pedserver
    LOCAL = "local"  # HSM <-> pedclient


class Side(enum.Enum):
    INITIATOR = "initiator"  # pedclient on REMOTE, the HSM on LOCAL
    RESPONDER = "responder"  # pedserver on REMOTE, pedclient on LOCAL


class LinkState(enum.Enum):
    START = "start"  # nothing sent yet
    NEGOTIATING = "negotiating"  # hello / connect request sent, answer awaited
    OPEN = "open"
    CLOSED = "closed"


class OpState(enum.Enum):
    FREE = "free"  # no operation
    REQUESTED = "requested"  # OpBegin sent, OpGranted/Busy awaited
    HELD = "held"  # the initiator holds the PED
    # The responder answered Busy on a pipelining link: the initiator's frames sent behind
    # its OpBegin may still come, and are discarded.  Otherwise as FREE.
    DISCARDING = "discarding"


@attrs.frozen
class ConnectionLost:
    """The peer's stream ended; *clean* if a Close was seen before it."""

    clean: bool


@attrs.frozen
class Undelivered:
    """An end-to-end frame the initiator pipelined behind an OpBegin that this side
    answered with Busy: not for the PED (the initiator sends the same bytes again)."""

    frame: Frame


INI, RSP = Side.INITIATOR, Side.RESPONDER
_E2E = "e2e"  # key for any end-to-end frame type
_OPEN_OPS: set[tuple[Side, int | str]] = {
    (INI, LinkType.OP_BEGIN),
    (INI, LinkType.OP_END),
    (INI, _E2E),
    (RSP, LinkType.OP_GRANTED),
    (RSP, LinkType.BUSY),
    (RSP, _E2E),
}

#: (hop, sender, state, frame type) -> next link state.  Close is allowed in every state
#: but CLOSED and is handled apart.  A ConnectResult that is not OK closes (see `_after`).
LINK_TRANSITIONS: dict[tuple[Hop, Side, LinkState, int | str], LinkState] = {
    (Hop.REMOTE, INI, LinkState.START, LinkType.HELLO): LinkState.NEGOTIATING,
    (Hop.REMOTE, RSP, LinkState.NEGOTIATING, LinkType.WELCOME): LinkState.OPEN,
    (Hop.REMOTE, RSP, LinkState.NEGOTIATING, LinkType.REFUSED): LinkState.CLOSED,
    # pedserver may refuse before reading a hello (too many connections, hello too late).
    (Hop.REMOTE, RSP, LinkState.START, LinkType.REFUSED): LinkState.CLOSED,
    (Hop.REMOTE, INI, LinkState.OPEN, LinkType.KEEPALIVE): LinkState.OPEN,
    (Hop.REMOTE, RSP, LinkState.OPEN, LinkType.KEEPALIVE): LinkState.OPEN,
    (Hop.REMOTE, INI, LinkState.OPEN, LinkType.KEEPALIVE_ACK): LinkState.OPEN,
    (Hop.REMOTE, RSP, LinkState.OPEN, LinkType.KEEPALIVE_ACK): LinkState.OPEN,
    (Hop.LOCAL, INI, LinkState.START, LocalType.CONNECT_REQUEST): LinkState.NEGOTIATING,
    (Hop.LOCAL, RSP, LinkState.NEGOTIATING, LocalType.CONNECT_RESULT): LinkState.OPEN,
    **{(hop, side, LinkState.OPEN, t): LinkState.OPEN for hop in Hop for side, t in _OPEN_OPS},
}

#: (sender, op state, frame type) -> next op state, for messages that touch the PED lock.
OP_TRANSITIONS: dict[tuple[Side, OpState, int | str], OpState] = {
    (INI, OpState.FREE, LinkType.OP_BEGIN): OpState.REQUESTED,
    (RSP, OpState.REQUESTED, LinkType.OP_GRANTED): OpState.HELD,
    (RSP, OpState.REQUESTED, LinkType.BUSY): OpState.FREE,
    (INI, OpState.HELD, LinkType.OP_END): OpState.FREE,
    (INI, OpState.HELD, _E2E): OpState.HELD,
    # The PED side may answer at any time: a late frame after OpEnd is not an error.
    (RSP, OpState.FREE, _E2E): OpState.FREE,
    (RSP, OpState.REQUESTED, _E2E): OpState.REQUESTED,
    (RSP, OpState.HELD, _E2E): OpState.HELD,
    # Pipelining (version 3 on, see OP_MIN_VERSION): the initiator's frames behind its
    # OpBegin; after the responder's Busy they are discarded (the responder's view).
    (INI, OpState.REQUESTED, _E2E): OpState.REQUESTED,
    (INI, OpState.DISCARDING, _E2E): OpState.DISCARDING,
    (INI, OpState.DISCARDING, LinkType.OP_BEGIN): OpState.REQUESTED,
    (RSP, OpState.DISCARDING, _E2E): OpState.DISCARDING,
}
#: Transitions that exist only from a link version on: an older peer refuses them.
OP_MIN_VERSION: dict[tuple[Side, OpState, int | str], int] = {
    (INI, OpState.REQUESTED, _E2E): PIPELINE_VERSION,
    (INI, OpState.DISCARDING, _E2E): PIPELINE_VERSION,
}
#: The responder's own view when it answers Busy on a link of `PIPELINE_VERSION` or later
#: (the initiator's view, on receiving it, is FREE: what it sent is in flight or queued).
BUSY_SENT: dict[OpState, OpState] = {OpState.REQUESTED: OpState.DISCARDING}
_OP_TYPES = {LinkType.OP_BEGIN, LinkType.OP_GRANTED, LinkType.BUSY, LinkType.OP_END, _E2E}


def accepted_types(hop: Hop) -> frozenset[int]:
    """Frame types that may appear on *hop* (either direction)."""
    e2e = set(E2E_RANGE)
    if hop is Hop.REMOTE:
        return frozenset({int(t) for t in LinkType} | e2e)
    ops = {LinkType.OP_BEGIN, LinkType.OP_GRANTED, LinkType.BUSY, LinkType.OP_END, LinkType.CLOSE}
    return frozenset({int(t) for t in LocalType} | {int(t) for t in ops} | e2e)


def negotiate_version(
    hello: LinkHello, *, low: int = LINK_VERSION_MIN, high: int = LINK_VERSION_MAX
) -> int | None:
    """The highest version both speak, or None (then refuse: never go below *low*)."""
    best = min(high, hello.max_version)
    return best if best >= max(low, hello.min_version) else None


def shorter_idle(*timeouts: int) -> int:
    """The idle timeout of a link: the shorter end wins."""
    return min(timeouts)


class LinkConnection:
    """One side of one hop; see the module docstring."""

    def __init__(
        self,
        hop: Hop,
        side: Side,
        *,
        max_payload: int = MAX_PAYLOAD,
        versions: tuple[int, int] = (LINK_VERSION_MIN, LINK_VERSION_MAX),
    ) -> None:
        self.hop = hop
        self.side = side
        self.state = LinkState.START
        self.op_state = OpState.FREE
        self.versions = versions
        self.hello: LinkHello | None = None  # the hello of this link (sent or received)
        self.request: ConnectRequest | None = None
        self.version: int | None = None
        self.idle_timeout: int | None = None
        self.close_message: Close | None = None
        self._decoder = FrameDecoder(accepted=accepted_types(hop), max_payload=max_payload)
        self._max_payload = max_payload
        self._eof = False
        self._we_closed = False
        self._lost_reported = False
        self._failed: RemoteProtocolError | None = None

    # ------------------------------------------------------------------ sending

    def send(self, message: Message) -> bytes:
        """Bytes to write for *message*; `LocalProtocolError` if we may not send it now."""
        if self._failed is not None:
            raise LocalProtocolError("this link failed; close its connection")
        self._check_welcome_we_send(message)
        self._transition(self.side, message, LocalProtocolError)
        if isinstance(message, Close | LinkRefused) or (
            isinstance(message, ConnectResult) and not message.ok
        ):
            self._we_closed = True
        return encode_frame(encode(message), max_payload=self._max_payload)

    def send_final(self, message: Close | LinkRefused | ConnectResult) -> bytes:
        """Last words: a Close (or a refusal) even after the peer broke the protocol.

        Allowed in any state; the link is CLOSED afterwards and nothing more may be sent.
        """
        if not isinstance(message, Close | LinkRefused | ConnectResult):
            raise LocalProtocolError("only Close, LinkRefused or ConnectResult are last words")
        if self._we_closed or (self.state is LinkState.CLOSED and self._failed is None):
            raise LocalProtocolError("the link is already closed")
        self.state = LinkState.CLOSED
        self._we_closed = True
        return encode_frame(encode(message), max_payload=self._max_payload)

    # ---------------------------------------------------------------- receiving

    def receive_data(self, data: bytes | bytearray) -> None:
        """Bytes read from the peer; ``b""`` means the peer closed its end."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after end of stream")
            return
        if data:
            self._decoder.feed(data)
        else:
            self._eof = True

    def next_event(self) -> Message | ConnectionLost | Undelivered | NeedData:
        """The next message, `ConnectionLost` once at end of stream, `Undelivered` for a
        pipelined frame discarded after our Busy, or `NEED_DATA`."""
        if self._failed is not None:
            raise LocalProtocolError("this link failed; close its connection")
        try:
            while True:
                frame = self._decoder.next_frame()
                if frame is NEED_DATA:
                    if self._eof and not self._lost_reported:
                        self._decoder.check_eof()
                        self._lost_reported = True
                        clean = self.close_message is not None
                        self.state = LinkState.CLOSED
                        return ConnectionLost(clean)
                    return NEED_DATA
                message = decode(frame)
                if self._we_closed:
                    # The peer may have sent this before it saw our Close: not an error,
                    # but nothing to act on either.
                    if isinstance(message, Close) and self.close_message is None:
                        self.close_message = message
                    continue
                self._check_welcome_we_receive(message)
                discarding = self.op_state is OpState.DISCARDING
                self._transition(_other(self.side), message, RemoteProtocolError)
                if discarding and isinstance(message, EndToEnd) and self.side is RSP:
                    return Undelivered(message.frame)
                return message
        except RemoteProtocolError as exc:
            self._failed = exc
            self.state = LinkState.CLOSED
            raise

    @property
    def buffered(self) -> int:
        return self._decoder.buffered

    # ---------------------------------------------------------------- internals

    def _transition(self, sender: Side, message: Message, error: type[Exception]) -> None:
        ftype: int | str = _E2E if isinstance(message, EndToEnd) else message.TYPE
        who = "we" if sender is self.side else "the peer"
        if ftype == LinkType.CLOSE:
            if self.state is LinkState.CLOSED:
                raise error(f"{who} sent Close on a closed link")
            if not isinstance(message, Close):  # pragma: no cover - decode guarantees it
                raise error("malformed Close")
            self.close_message = message
            self.state = LinkState.CLOSED
            return
        if isinstance(message, OpBegin) and message.op_timeout is not None:
            if (self.version or 0) < OP_TIMEOUT_VERSION:
                raise error(
                    f"{who} announced an operation timeout in OpBegin on a link of version "
                    f"{self.version}; it needs version {OP_TIMEOUT_VERSION}"
                )
        name = "end-to-end frame" if ftype == _E2E else type(message).__name__
        key = (self.hop, sender, self.state, ftype)
        new_state = LINK_TRANSITIONS.get(key)
        if new_state is None:
            raise error(
                f"{who} may not send {name} on the {self.hop.value} hop as "
                f"{sender.value} in state {self.state.value}"
            )
        if ftype in _OP_TYPES:
            op_key = (sender, self.op_state, ftype)
            new_op = OP_TRANSITIONS.get(op_key)
            needs = OP_MIN_VERSION.get(op_key, 0)
            if new_op is None or (self.version or 0) < needs:
                after = f" on a link of version {self.version} (it needs {needs})" if (
                    new_op is not None) else ""
                raise error(
                    f"{who} may not send {name} while the operation state is "
                    f"{self.op_state.value}{after}"
                )
            if ftype == LinkType.BUSY and sender is self.side and (
                (self.version or 0) >= PIPELINE_VERSION
            ):
                new_op = BUSY_SENT.get(self.op_state, new_op)
            self.op_state = new_op
        self.state = new_state
        self._after(message)

    def _after(self, message: Message) -> None:
        if isinstance(message, LinkHello):
            self.hello = message
        elif isinstance(message, LinkWelcome):
            self.version = message.version
            self.idle_timeout = message.idle_timeout
        elif isinstance(message, ConnectRequest):
            self.request = message
        elif isinstance(message, ConnectResult):
            if not message.ok:
                self.state = LinkState.CLOSED
            else:
                self.version = message.version
                self.idle_timeout = message.idle_timeout
        elif isinstance(message, LinkRefused):
            self.state = LinkState.CLOSED

    def _check_welcome_we_send(self, message: Message) -> None:
        if isinstance(message, LinkWelcome) and self.hello is not None:
            lo, hi = self.versions
            ok_range = max(lo, self.hello.min_version) <= message.version
            if not (ok_range and message.version <= min(hi, self.hello.max_version)):
                raise LocalProtocolError(
                    f"welcome version {message.version} is not one both sides speak"
                )
            if message.idle_timeout > self.hello.idle_timeout:
                raise LocalProtocolError("welcome idle timeout must not exceed the client's")

    def _check_welcome_we_receive(self, message: Message) -> None:
        if isinstance(message, LinkWelcome) and self.hello is not None:
            lo, hi = self.versions
            if not max(lo, self.hello.min_version) <= message.version <= min(
                hi, self.hello.max_version
            ):
                raise RemoteProtocolError(
                    f"pedserver chose link version {message.version}, outside the "
                    f"{self.hello.min_version}-{self.hello.max_version} we offered; "
                    "refusing to downgrade"
                )
            if message.idle_timeout > self.hello.idle_timeout:
                raise RemoteProtocolError(
                    f"pedserver chose idle timeout {message.idle_timeout} s, longer than "
                    f"our {self.hello.idle_timeout} s (the shorter must win)"
                )


def _other(side: Side) -> Side:
    return Side.RESPONDER if side is Side.INITIATOR else Side.INITIATOR
