"""One PED operation's dialog with the operator: prompts, keypad entry, keys, refusals.

An `OperationDialog` lives for one operation of the engine (``engine.py``).  The read and
imprint flows (``read_flow.py``, ``imprint_flow.py``) ask through it: it shows a screen
on the panel (``panel.py``), waits for the operator's input with the PED-key timeout,
and turns CLR into `OperationCancelled`, silence into `KeyTimeout` and a pulled cable
into `Unplugged`.  It also emits the operation's non-secret `DeviceEvent`s, and logs
the operation's OP_STARTED line when the operation first asks for input (see the engine).

A refusal (wrong key, blank key...) is not an error: it is shown above the next prompt
(`refuse`, `with_refusal`) and the flow asks again.  Typed digits of a PIN are shown as
stars; nothing here keeps a secret beyond the prompt that returns it.

The flows also tell the HSM how far they are (`notice`: "insert key 2 of 3", "enter the
PIN"), as a real PED does: the session sends each as a sealed NOTICE (PROTOCOL.md
section 4) that the host shows.  Notices carry no secret, only a kind and step/total.
They say what the PED waits for, so they go out when it has to wait for the operator;
when the operator's answer is already queued (the ``auto`` operator, every benchmark
login) they would tell the host nothing it can act on, and are dropped: the hot path
costs no frame more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from keys.colors import Color
from ped.device.emulated.panel import Insert, Panel, Press, Prompt, PromptKind, Remove, Unplug
from ped.device.messages import DeviceEvent, EventKind
from ped.errors import PedError
from ped.ops import errors as operr
from ped.ops.messages import NoticeKind

MAX_PIN_DIGITS = 48

Emit = Callable[[DeviceEvent], None]
#: Sends a progress notice of the operation to the HSM: kind, step, total.
Notify = Callable[[NoticeKind, int, int], None]


def no_notify(_kind: NoticeKind, _step: int, _total: int) -> None:
    """For an operation no HSM waits on (the RPV read of the handshake, a local test)."""


log = logging.getLogger("pedemu")

_SECRET_PROMPTS = {
    PromptKind.PIN, PromptKind.NEW_PIN, PromptKind.CONFIRM_PIN, PromptKind.PASSWORD
}


class Unplugged(PedError):
    """The operator pulled the PED's cable (raised out of any operation)."""


class OperationDialog:
    """The panel as one operation sees it (see the module docstring)."""

    def __init__(
        self,
        panel: Panel,
        *,
        op: int,
        timeout: float,
        session: int,
        emit: Emit,
        started: DeviceEvent,
        notify: Notify = no_notify,
    ) -> None:
        self.panel = panel
        #: Which operation this is (prompts carry it, so operators tell operations apart).
        self.op = op
        self.timeout = timeout
        self._session = session
        self._emit = emit
        self._refusal = ""  # shown above the next prompt
        self._started: DeviceEvent | None = started  # until logged
        self._notify = notify
        self._pending: list[tuple[NoticeKind, int, int]] = []  # until the PED waits

    # ------------------------------------------------------------------------ events
    def event(
        self,
        kind: EventKind,
        color: Color | None = None,
        keyset: bytes | None = None,
        outcome: str = "",
        detail: str = "",
    ) -> None:
        self._emit(
            DeviceEvent(
                self._session,
                kind,
                int(color or 0),
                keyset.hex() if keyset else "",
                outcome,
                detail,
            )
        )

    def notice(self, kind: NoticeKind, step: int = 0, total: int = 0) -> None:
        """Tell the HSM how far the operation is (step/total: "key 2 of 3") when the PED
        next waits for the operator (see the module docstring)."""
        self._pending.append((kind, min(step, 255), min(total, 255)))

    def _tell_pending(self, *, waiting: bool) -> None:
        pending, self._pending = self._pending, []
        if waiting:
            for kind, step, total in pending:
                self._notify(kind, step, total)

    def log_started(self, *, waiting: bool) -> None:
        """Log the OP_STARTED line once: at info level when the PED waits for the
        operator, else at debug level."""
        started, self._started = self._started, None
        if started is None:
            return
        level = logging.INFO if waiting else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "session %d: %s", started.session, started.describe())

    # ------------------------------------------------------------------------- input
    async def next_input(self) -> Press | Insert:
        """The operator's next key press or key insertion (removals are skipped)."""
        while True:
            if self.panel.unplugged.is_set():
                raise Unplugged()
            if self._started is not None:
                self.log_started(waiting=not self.panel.has_input)
            if self._pending:
                self._tell_pending(waiting=not self.panel.has_input)
            item = await self.panel.next_input(self.timeout)
            if item is None:
                raise operr.KeyTimeout(f"nothing on the PED for {self.timeout:g} s")
            if isinstance(item, Unplug):
                raise Unplugged()
            if isinstance(item, Remove):
                continue
            return item

    async def present_key(self, prompt: Prompt, lines: list[str]) -> Path:
        """Wait until a key is in the slot and ENTER is pressed; return its path."""
        self.panel.show([*lines, "Press ENTER."], prompt)
        while True:
            item = await self.next_input()
            if isinstance(item, Press):
                if item.key == "ENTER" and self.panel.slot is not None:
                    return self.panel.slot
                if item.key == "CLR":
                    raise operr.OperationCancelled("cancelled on the PED (CLR)")
            # an insert without ENTER waits for ENTER

    def refuse(self, text: str) -> None:
        """Show *text* above the next prompt (see `with_refusal`)."""
        self._refusal = text

    def with_refusal(self, lines: list[str]) -> list[str]:
        if self._refusal:
            lines = [self._refusal, *lines]
            self._refusal = ""
        return lines

    async def yes_no(self, lines: list[str], prompt: Prompt) -> bool:
        self.panel.show(lines, prompt)
        while True:
            item = await self.next_input()
            if isinstance(item, Press):
                if item.key == "YES":
                    return True
                if item.key == "NO":
                    return False
                if item.key == "CLR":
                    raise operr.OperationCancelled("cancelled on the PED (CLR)")

    async def digits(self, lines: list[str], prompt: Prompt, *, allow_empty: bool) -> str:
        """Digits typed then ENTER; CLR clears, or cancels when nothing is typed; < erases."""
        typed: list[str] = []
        echo = False
        while True:
            stars = "*" * len(typed) if prompt.kind in _SECRET_PROMPTS else "".join(typed)
            self.panel.show([*lines, f"> {stars}"], prompt, echo=echo)
            echo = True
            item = await self.next_input()
            if not isinstance(item, Press):
                continue
            key = item.key
            if key.isdigit():
                if len(typed) < MAX_PIN_DIGITS:
                    typed.append(key)
            elif key == "<" and typed:
                typed.pop()
            elif key == "CLR":
                if not typed:
                    raise operr.OperationCancelled("cancelled on the PED (CLR)")
                typed.clear()
            elif key == "ENTER" and (typed or allow_empty):
                value = "".join(typed)
                typed.clear()
                return value

    async def number(self, lines: list[str], prompt: Prompt) -> int:
        """A number between the prompt's low and high, asked again until it is."""
        while True:
            text = await self.digits(lines, prompt, allow_empty=False)
            value = int(text)
            if prompt.low <= value <= prompt.high:
                return value
            lines = [f"Out of range {prompt.low}-{prompt.high}.", *lines[-2:]]
