"""A PED double whose fault is chosen per case: the PED end `pedconform hsm` offers an HSM.

Theory of operation
-------------------
`FaultyPed` is the PED: it reads the HSM's RPV from the orange key in a keyring (as a
real PED reads the orange key at each handshake), keeps the blue, red... keys the HSM
imprints on it *in memory only* (the suite's process; wiped at the end), and answers
every READ_SECRET, IMPRINT and SHOW_MESSAGE as a careful operator would.  The suite sets
`FaultyPed.fault` before a step and clears it after; while it is set, every handshake
(`HANDSHAKE_FAULTS`) or every READ_SECRET (the others) of any link gets that fault, so
an HSM that retries on its own meets the same wrong key or the same silent PED again.

`DeviceSide` is the PED end of one link (one per link, sessions one after another on it,
each a `ped.ops.PedSideSession`).  It records what the HSM did in the shared `Wire`: the
suite judges from those records (a SEALED frame the HSM sent on a session whose channel
had failed, a CANCEL, which suite the HSM asked for...).  Nothing secret is recorded.
"""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
import trio

from keys import Color, Keyring, ShareCollector, load_image, wipe
from ped.channel.handshake import PedInfo
from ped.ops import PedSideSession
from ped.ops import events as ev
from ped.ops.errors import ErrorCode
from ped.wire.framing import Frame
from ped.wire.types import E2EType

#: The PED the double says it is (public facts, in the channel's PedInfo and the link).
PED_INFO = PedInfo(model="pedconform PED", serial="CONFORM-1", firmware="1.0")
#: Size of a suite-2 SEALED payload (one 544-byte block and the tag): garbage of the
#: right size passes the receiver's size check and fails only at the tag.
SEALED_PAYLOAD = 544 + 16


class Fault(enum.Enum):
    """What the PED does wrong (or hard) while a case's step runs."""

    NONE = "none"
    WRONG_RPV = "wrong-rpv"  # another orange key: HANDSHAKE_REFUSED(RPV_MISMATCH)
    ALTERED_RESPONSE = "altered-response"  # HANDSHAKE_RESPONSE with one bit flipped
    GARBAGE = "garbage"  # a SEALED frame of random bytes answers READ_SECRET
    TAMPERED = "tampered"  # the right READ_RESULT with one bit flipped
    WRONG_COLOUR = "wrong-colour"  # OP_ERROR(WRONG_COLOR)
    KEYSET_MISMATCH = "keyset-mismatch"  # OP_ERROR(KEYSET_MISMATCH)
    CANCELLED = "cancelled"  # the operator cancels: OP_ERROR(CANCELLED)
    KEY_TIMEOUT = "key-timeout"  # no key within pedk: OP_ERROR(KEY_TIMEOUT)
    SLOW = "slow"  # the right answer, after `FaultyPed.slow_delay` seconds
    SILENT = "silent"  # no answer at all (until the HSM cancels)
    DROP_LINK = "drop-link"  # the link is cut while READ_SECRET waits
    HUNG = "hung"  # no answer at all, not even to a CANCEL (a PED that hung)


HANDSHAKE_FAULTS = frozenset({Fault.WRONG_RPV, Fault.ALTERED_RESPONSE})
_OP_ERRORS = {
    Fault.WRONG_COLOUR: (ErrorCode.WRONG_COLOR, "a red key was presented"),
    Fault.KEYSET_MISMATCH: (ErrorCode.KEYSET_MISMATCH, "the key belongs to another keyset"),
    Fault.CANCELLED: (ErrorCode.CANCELLED, "the operator cancelled"),
    Fault.KEY_TIMEOUT: (ErrorCode.KEY_TIMEOUT, "no key was presented in time"),
}


@attrs.frozen
class Record:
    """One thing seen on the wire or done by the PED: *kind* is a word, *detail* public."""

    seconds: float  # trio clock
    link: int
    kind: str
    detail: str = ""


@attrs.define
class Wire:
    """Everything the HSM did, in order; the suite takes a `mark` before a step."""

    records: list[Record] = attrs.Factory(list)
    links: int = 0
    trace: Callable[[Record], None] | None = None  # --trace: each record as it comes

    def add(self, link: int, kind: str, detail: str = "") -> None:
        record = Record(trio.current_time(), link, kind, detail)
        self.records.append(record)
        if self.trace is not None:
            self.trace(record)

    def mark(self) -> int:
        return len(self.records)

    def since(self, mark: int) -> list[Record]:
        return self.records[mark:]


@attrs.define
class _Key:
    keyset_id: bytes
    secret: bytearray = attrs.field(repr=False)


class FaultyPed:
    """The PED (see the module docstring).  *keyring*: where the orange key is."""

    def __init__(self, keyring: Path, wire: Wire) -> None:
        self.keyring = keyring
        self.wire = wire
        self.fault = Fault.NONE
        self.slow_delay = 1.0
        self.keys: dict[Color, _Key] = {}
        self.key_timeout_grace = 0.0

    def orange_rpv(self) -> bytearray:
        """The RPV on the keyring's orange keyset (M of N rebuilt; the caller wipes)."""
        entries = Keyring(self.keyring).keys(color=Color.ORANGE)
        if not entries:
            raise FileNotFoundError(f"{self.keyring} holds no orange key")
        first = entries[0].header
        assert first is not None
        collector = ShareCollector(Color.ORANGE, first.keyset_id)
        for entry in entries:
            if collector.complete:
                break
            image = load_image(entry.path)
            try:
                if image.header.keyset_id == first.keyset_id:
                    collector.add(image)
            finally:
                image.wipe()
        return collector.secret()

    def wipe(self) -> None:
        for key in self.keys.values():
            wipe(key.secret)
        self.keys.clear()


class DeviceSide:
    """The PED end of one link: sessions one after another (see the module docstring)."""

    def __init__(
        self,
        ped: FaultyPed,
        link: int,
        nursery: trio.Nursery,
        send: Callable[[Frame], Awaitable[None]],
        drop: Callable[[], Awaitable[None]],
    ) -> None:
        self.ped = ped
        self.link = link
        self.nursery = nursery
        self._send = send
        self._drop = drop
        self.session: PedSideSession | None = None
        self.poisoned = False  # we sent garbage or a tampered frame on this session
        self.waiting: trio.CancelScope | None = None  # a slow or silent answer pending

    def _record(self, kind: str, detail: str = "") -> None:
        self.ped.wire.add(self.link, kind, detail)

    async def _flush(self) -> None:
        if self.session is not None:
            for frame in self.session.frames_to_send():
                await self._send(frame)

    async def receive(self, frame: Frame) -> None:
        """One end-to-end frame from the HSM."""
        if frame.type == E2EType.HANDSHAKE_INIT:
            await self._new_session(frame)
            return
        if self.session is None or not self.session.is_open or self.poisoned:
            what = "SEALED" if frame.type == E2EType.SEALED else f"frame 0x{frame.type:02x}"
            self._record("after-failure", f"{what} on a session whose channel had ended")
            return
        for event in self.session.receive_frame(frame):
            await self._on_event(event)
        await self._flush()

    async def receive_eof(self) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        if self.session is not None:
            self.session.receive_eof()

    async def _new_session(self, frame: Frame) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        self.session = PedSideSession(ped_info=PED_INFO)
        self.poisoned = False
        suite = frame.payload[0] if frame.payload else 0
        self._record("handshake-init", f"suite {suite}")
        for event in self.session.receive_frame(frame):
            if isinstance(event, ev.RpvRequired):
                await self._answer_handshake()
            elif isinstance(event, ev.SessionFailed):
                self._record("hsm-garbage", f"malformed HANDSHAKE_INIT: {event.error}")
        await self._flush()

    async def _answer_handshake(self) -> None:
        assert self.session is not None
        fault = self.ped.fault
        if fault is Fault.WRONG_RPV:
            rpv = bytearray(secrets.token_bytes(32))  # another orange key
        else:
            rpv = self.ped.orange_rpv()
        try:
            result = self.session.supply_rpv(rpv)
        finally:
            wipe(rpv)
        if isinstance(result, ev.SessionFailed):
            self._record("refused", "RPV_MISMATCH")
            return
        frames = self.session.frames_to_send()
        if fault is Fault.ALTERED_RESPONSE:
            frames = [_flip_last_bit(f) for f in frames]
            self.poisoned = True
            self._record("fault-sent", "HANDSHAKE_RESPONSE with one bit flipped")
        else:
            self._record("channel", "HANDSHAKE_RESPONSE sent")
        for out in frames:
            await self._send(out)

    async def _on_event(self, event: ev.PedEvent) -> None:
        assert self.session is not None
        if isinstance(event, ev.ReadSecretRequested):
            keyset = " with keyset" if event.keyset_id else ""
            self._record("read", f"READ_SECRET {event.color.label}{keyset}")
            await self._answer_read(event)
        elif isinstance(event, ev.ImprintRequested):
            self._record("imprint", f"IMPRINT {event.color.label}")
            self._answer_imprint(event)
        elif isinstance(event, ev.ShowRequested):
            self._record("show", "SHOW_MESSAGE")
            self.session.answer_show()
        elif isinstance(event, ev.CancelRequested):
            self._record("cancel", f"CANCEL of op {event.op_id}")
            if self.ped.fault is Fault.HUNG:
                self._record("fault-sent", "no answer to the CANCEL")
                return
            if self.waiting is not None:
                self.waiting.cancel()
            self.session.answer_error(ErrorCode.CANCELLED, "cancelled by the HSM")
        elif isinstance(event, ev.SessionClosed):
            self._record("goodbye", event.reason.name)
        elif isinstance(event, ev.SessionFailed):
            self._record("hsm-garbage", f"the HSM sent a frame that failed: {event.error}")

    async def _answer_read(self, event: ev.ReadSecretRequested) -> None:
        assert self.session is not None
        fault = self.ped.fault
        if fault in _OP_ERRORS:
            code, detail = _OP_ERRORS[fault]
            self.session.answer_error(code, detail)
            self._record("fault-sent", f"OP_ERROR {code.name}")
            return
        if fault is Fault.DROP_LINK:
            self._record("fault-sent", "link cut while READ_SECRET waits")
            await self._drop()
            return
        if fault is Fault.HUNG:
            self._record("fault-sent", "no answer, and none will come")
            return
        if fault is Fault.SILENT:
            self._record("fault-sent", "no answer")
            self.nursery.start_soon(self._late, event, None)
            return
        if fault is Fault.SLOW:
            self.nursery.start_soon(self._late, event, self.ped.slow_delay)
            return
        self._read_result(event)
        if fault in (Fault.GARBAGE, Fault.TAMPERED):
            frames = self.session.frames_to_send()
            if fault is Fault.GARBAGE:
                frames = [Frame(E2EType.SEALED, os.urandom(SEALED_PAYLOAD))]
                self._record("fault-sent", "a SEALED frame of random bytes")
            else:
                frames = [_flip_last_bit(f) for f in frames]
                self._record("fault-sent", "READ_RESULT with one bit flipped")
            self.poisoned = True
            for out in frames:
                await self._send(out)

    async def _late(self, event: ev.ReadSecretRequested, delay: float | None) -> None:
        """A slow answer after *delay* s, or none (*delay* None) until a CANCEL."""
        session = self.session
        with trio.CancelScope() as scope:
            self.waiting = scope
            if delay is None:
                await trio.sleep_forever()
            await trio.sleep(delay)
        if self.waiting is scope:
            self.waiting = None
        if scope.cancelled_caught or session is not self.session or session is None:
            return
        if session.current is None or not session.is_open:
            return
        self._read_result(event)
        self._record("fault-sent", f"READ_RESULT after {delay:g} s")
        await self._flush()

    def _read_result(self, event: ev.ReadSecretRequested) -> None:
        assert self.session is not None
        key = self.ped.keys.get(event.color)
        if key is None or (event.keyset_id is not None and event.keyset_id != key.keyset_id):
            self._record("unknown-key", f"no {event.color.label} key of that keyset here")
            self.session.answer_error(
                ErrorCode.CANCELLED,
                f"this PED holds no {event.color.label} key of that keyset: "
                "run the suite's init step on it first",
            )
            return
        self.session.answer_read_secret(key.secret, keyset_id=key.keyset_id)

    def _answer_imprint(self, event: ev.ImprintRequested) -> None:
        assert self.session is not None
        existing = self.ped.keys.get(event.color)
        if event.new_secret is None:  # reuse only
            if existing is None:
                self.session.answer_error(ErrorCode.NO_BLANK_KEY, "no keyset of that colour")
                return
            self.session.answer_imprint(
                keyset_id=existing.keyset_id, m=1, n=1, pin=False, copies=0,
                reused_secret=existing.secret,
            )
            return
        if existing is not None:
            wipe(existing.secret)
        key = _Key(secrets.token_bytes(16), bytearray(event.new_secret))
        self.ped.keys[event.color] = key
        self.session.answer_imprint(keyset_id=key.keyset_id, m=1, n=1, pin=False, copies=1)


def _flip_last_bit(frame: Frame) -> Frame:
    payload = bytearray(frame.payload)
    payload[-1] ^= 0x01
    return Frame(frame.type, bytes(payload))
