"""The emulated PED's operations: read a role's secret, imprint keys, show, over a panel.

Theory of operation
-------------------
`PedEngine` is what a PED's firmware does between the end-to-end channel (which tells
it what the HSM wants) and the front panel (``panel.py``: screen, keypad, key slot).
Each operation shows a prompt, waits for the operator with the PED-key timeout, reacts,
and finally returns a result or raises one of ``ped.ops.errors``:

* **read** (`read_secret`): "Insert a BLUE PED key" until M shares of one keyset are in
  (``keys.ShareCollector``).  A blank key, a key of the wrong colour, a share already
  read or an unreadable image is *refused on the PED* and re-prompted: the HSM never
  hears of it (a wrong colour is not a failed login).  A key of another keyset than the
  HSM expects ends the operation with `KeysetMismatch`.  A PIN-protected keyset asks
  for the PED PIN once; the result is ``keys.secret_for_hsm``.
* **imprint** (`imprint`): the four questions in order - reuse an existing keyset?
  M of N?  PED PIN?  duplicates? - then "Insert a blank key" for each of the N keys and
  each copy.  A key that is not blank is overwritten only after YES to "Overwrite?".
* **show**: a message on the screen.

Waiting for the operator is bounded by the key timeout (`KeyTimeout`); CLR on an empty
entry cancels (`OperationCancelled`); the HSM cancels by cancelling the calling task.
One operation at a time (`busy`).  Secrets exist only in bytearrays that are wiped;
the PIN is a str because ``keys`` takes one, and is dropped at once.  Every step emits
a non-secret `ped.device.messages.DeviceEvent` through ``emit`` for the host's log.
The engine logs the OP_STARTED line ("session 2: op-started blue read-secret") when
the operation first asks for input: at info level when it has to wait for the operator
(whoever watches pedemu's own log learns that the PED waits for them), at debug level
when the answer is already queued (the ``auto`` operator: no log line per login).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import attrs
import trio

from keys import KeyImage, ShareCollector, load_image, new_keyset, read_header, write_image
from keys import errors as kerr
from keys.colors import Color
from keys.image import LABEL_MAX_BYTES
from keys.pin import secret_for_hsm, validate_pin
from keys.shamir import wipe
from ped.device.emulated.panel import Insert, Panel, Press, Prompt, PromptKind, Remove, Unplug
from ped.device.messages import DeviceEvent, EventKind
from ped.ops import errors as operr
from ped.transport import PedBusy

DEFAULT_KEY_TIMEOUT = 200.0
MAX_PIN_DIGITS = 48
MAX_REFUSALS = 100  # a stuck operator cannot spin the PED forever

Emit = Callable[[DeviceEvent], None]

log = logging.getLogger("pedemu")


def _no_emit(_event: DeviceEvent) -> None:
    return None


def key_label(requested: str, color: Color) -> str:
    """The label written on new keys: the HSM's text made fit for a key image.

    The HSM's label is only a prompt text, so the PED does not refuse an imprint over
    it: an empty label becomes the role's name, and a long one is cut (on a character
    boundary) to what a key image holds.
    """
    text = " ".join(requested.split()) or color.role
    while len(text.encode("utf-8")) > LABEL_MAX_BYTES:
        text = text[:-1].rstrip()
    return text


class Unplugged(Exception):
    """The operator pulled the PED's cable (raised out of any operation)."""


@attrs.frozen
class ReadOutcome:
    color: Color
    keyset_id: bytes
    label: str
    m: int
    n: int
    secret: bytearray = attrs.field(repr=False)  # what the HSM receives; caller wipes


@attrs.frozen
class ImprintOutcome:
    color: Color
    keyset_id: bytes
    m: int
    n: int
    pin: bool
    copies: int  # keys written, duplicates included
    reused: bool
    #: secret_for_hsm of the keyset: what the HSM will receive at login.  Needed by the
    #: HSM whenever it cannot compute it itself (reused keyset, or a PED PIN was set).
    secret: bytearray | None = attrs.field(repr=False, default=None)


class PedEngine:
    """See the module docstring.  ``keyring``: where blank keys are created if asked."""

    def __init__(
        self,
        panel: Panel,
        *,
        key_timeout: float = DEFAULT_KEY_TIMEOUT,
        keyring: str | os.PathLike[str] | None = None,
    ) -> None:
        self.panel = panel
        self.key_timeout = key_timeout
        self.keyring = None if keyring is None else Path(keyring)
        self._lock = trio.Lock()
        self._ops = itertools.count(1)
        # State of the running operation (one at a time, under _lock):
        self._op = 0
        self._timeout = key_timeout
        self._emit: Emit = _no_emit
        self._session = 0
        self._refusal = ""  # shown above the next prompt
        self._started: DeviceEvent | None = None  # until logged (see the docstring)

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    # ---------------------------------------------------------------- public operations
    async def read_secret(
        self,
        color: Color,
        keyset_id: bytes | None = None,
        label: str = "",
        *,
        key_timeout: float | None = None,
        session: int = 0,
        emit: Emit = _no_emit,
    ) -> ReadOutcome:
        async with self._operation(session, emit, "read-secret", color, key_timeout):
            return await self._read(color, keyset_id, label, session, emit)

    async def imprint(
        self,
        color: Color,
        label: str = "",
        *,
        new_secret: bytes | bytearray | None = None,
        allow_reuse: bool = False,
        key_timeout: float | None = None,
        session: int = 0,
        emit: Emit = _no_emit,
    ) -> ImprintOutcome:
        if new_secret is None and not allow_reuse:
            raise operr.BadRequest("an imprint needs a new secret or reuse allowed")
        label = key_label(label, color)
        async with self._operation(session, emit, "imprint", color, key_timeout):
            return await self._imprint(color, label, new_secret, allow_reuse, session, emit)

    async def show(self, text: str, *, session: int = 0, emit: Emit = _no_emit) -> None:
        async with self._operation(session, emit, "show", None, None):
            self.panel.show(text.splitlines() or [""])

    async def ask_local_rpv(self, *, session: int = 0, emit: Emit = _no_emit) -> bool:
        """Local mode: may this HSM connect without an orange key?  YES: use the public
        local RPV; NO: read the orange key as in remote mode; CLR: refuse."""
        async with self._operation(session, emit, "local-connect", None, None):
            lines = ["HSM connecting locally.", "Without an orange key?", "YES / NO (orange key)"]
            prompt = Prompt(PromptKind.YES_NO, question="rpv-local", op=self._op)
            return await self._yes_no(lines, prompt)

    # --------------------------------------------------------------------- machinery
    @contextlib.asynccontextmanager
    async def _operation(
        self,
        session: int,
        emit: Emit,
        name: str,
        color: Color | None,
        key_timeout: float | None,
    ) -> AsyncIterator[None]:
        if self.panel.unplugged.is_set():
            raise Unplugged()
        if self._lock.locked():
            # Another session's operation holds the PED (the host's PED lock should have
            # prevented this): answer BUSY rather than queue behind it.
            raise PedBusy("the PED is busy with another operation")
        # Free (just checked): take it without a schedule point, honouring a cancellation.
        await trio.lowlevel.checkpoint_if_cancelled()
        self._lock.acquire_nowait()
        outcome = "error"
        try:
            self._op = next(self._ops)
            self._timeout = self.key_timeout if key_timeout is None else key_timeout
            self._emit, self._session, self._refusal = emit, session, ""
            self.panel.drain()
            started = DeviceEvent(session, EventKind.OP_STARTED, int(color or 0), detail=name)
            self._started = started
            emit(started)
            try:
                yield
            except BaseException as exc:
                outcome = _outcome_word(exc)
                raise
            else:
                outcome = "ok"
        finally:
            try:
                if self._started is not None:  # it never asked for input
                    self._log_started(waiting=False)
                emit(
                    DeviceEvent(
                        session,
                        EventKind.OP_FINISHED,
                        int(color or 0),
                        outcome=outcome,
                        detail=name,
                    )
                )
                if outcome != "unplugged" and name != "show":
                    self.panel.idle()
            finally:
                self._emit = _no_emit
                self._started = None
                self._lock.release()

    def _event(
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

    def _log_started(self, *, waiting: bool) -> None:
        started, self._started = self._started, None
        assert started is not None
        level = logging.INFO if waiting else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "session %d: %s", started.session, started.describe())

    async def _next(self) -> Press | Insert:
        while True:
            if self.panel.unplugged.is_set():
                raise Unplugged()
            if self._started is not None:
                self._log_started(waiting=not self.panel.has_input)
            item = await self.panel.next_input(self._timeout)
            if item is None:
                raise operr.KeyTimeout(f"nothing on the PED for {self._timeout:g} s")
            if isinstance(item, Unplug):
                raise Unplugged()
            if isinstance(item, Remove):
                continue
            return item

    async def _present_key(self, prompt: Prompt, lines: list[str]) -> Path:
        """Wait until a key is in the slot and ENTER is pressed; return its path."""
        self.panel.show([*lines, "Press ENTER."], prompt)
        while True:
            item = await self._next()
            if isinstance(item, Press):
                if item.key == "ENTER" and self.panel.slot is not None:
                    return self.panel.slot
                if item.key == "CLR":
                    raise operr.OperationCancelled("cancelled on the PED (CLR)")
            # an insert without ENTER waits for ENTER

    def _refuse(self, text: str) -> None:
        # The refusal is shown above the next prompt (see `_with_refusal`).
        self._refusal = text

    def _with_refusal(self, lines: list[str]) -> list[str]:
        if self._refusal:
            lines = [self._refusal, *lines]
            self._refusal = ""
        return lines

    async def _yes_no(self, lines: list[str], prompt: Prompt) -> bool:
        self.panel.show(lines, prompt)
        while True:
            item = await self._next()
            if isinstance(item, Press):
                if item.key == "YES":
                    return True
                if item.key == "NO":
                    return False
                if item.key == "CLR":
                    raise operr.OperationCancelled("cancelled on the PED (CLR)")

    async def _digits(self, lines: list[str], prompt: Prompt, *, allow_empty: bool) -> str:
        """Digits typed then ENTER; CLR clears, or cancels when nothing is typed; < erases."""
        typed: list[str] = []
        echo = False
        while True:
            stars = "*" * len(typed) if prompt.kind in _SECRET_PROMPTS else "".join(typed)
            self.panel.show([*lines, f"> {stars}"], prompt, echo=echo)
            echo = True
            item = await self._next()
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

    async def _number(self, lines: list[str], prompt: Prompt) -> int:
        while True:
            text = await self._digits(lines, prompt, allow_empty=False)
            value = int(text)
            if prompt.low <= value <= prompt.high:
                return value
            lines = [f"Out of range {prompt.low}-{prompt.high}.", *lines[-2:]]

    # ------------------------------------------------------------------------- read
    async def _read(
        self, color: Color, keyset_id: bytes | None, label: str, session: int, emit: Emit
    ) -> ReadOutcome:
        collector = ShareCollector(color, keyset_id)
        images: list[KeyImage] = []
        try:
            pin = await self._collect(collector, label, images)
            header = collector.header
            assert header is not None and header.keyset_id is not None
            self.panel.show(["Reading key...", "Please wait."])
            secret = await _for_hsm(collector, pin)
            del pin
            return ReadOutcome(color, header.keyset_id, header.label, header.m, header.n, secret)
        finally:
            collector.wipe()
            for image in images:
                image.wipe()

    async def _collect(
        self, collector: ShareCollector, label: str, keep: list[KeyImage] | None = None
    ) -> str | None:
        """Read keys until M shares are in; return the PIN typed (None without PIN)."""
        color = collector.color
        pin: str | None = None
        refusals = 0
        while not collector.complete:
            first = collector.header
            index = len(collector.indices) + 1
            count = first.m if first else 0
            lines = [f"Insert a {color.label.upper()} PED key"]
            if label or first:
                lines.append(f"for {label or first.label}")  # type: ignore[union-attr]
            if count > 1:
                lines.append(f"Key {index} of {count}.")
            prompt = Prompt(
                PromptKind.INSERT_KEY,
                color=color,
                keyset_id=first.keyset_id if first else collector.expected_keyset,
                label=label or (first.label if first else ""),
                index=index,
                count=count,
                op=self._op,
            )
            path = await self._present_key(prompt, self._with_refusal(lines))
            try:
                image = load_image(path)
            except kerr.KeyImageError as exc:
                self._event(EventKind.KEY_REFUSED, color, outcome="unreadable")
                self._refuse(f"Key unreadable: {_short(exc)}")
                refusals += 1
                if refusals > MAX_REFUSALS:
                    raise operr.DeviceError("too many unreadable keys") from None
                continue
            try:
                collector.add(image)
            except kerr.KeysetMismatch:
                self._event(EventKind.KEY_REFUSED, color, image.keyset_id, "keyset-mismatch")
                image.wipe()
                self.panel.show(["Wrong keyset:", "this key is not of", "the keyset expected."])
                raise operr.KeysetMismatch(
                    f"a {color.label} key of keyset {image.header.keyset_hex} was presented"
                ) from None
            except (
                kerr.BlankKey,
                kerr.WrongColor,
                kerr.RepeatedShare,
                kerr.InconsistentShares,
            ) as exc:
                word, text = _refusal_of(exc, image)
                self._event(EventKind.KEY_REFUSED, color, image.keyset_id, word)
                image.wipe()
                self._refuse(text)
                refusals += 1
                if refusals > MAX_REFUSALS:
                    raise operr.DeviceError("too many refused keys") from None
                continue
            if keep is not None:
                keep.append(image)
            else:
                image.wipe()
            header = collector.header
            assert header is not None
            self._event(
                EventKind.KEY_READ, color, header.keyset_id, "ok", f"key {index} of {header.m}"
            )
            if header.pin_protected and pin is None:
                pin = await self._ask_pin(color, header.label, header.keyset_id)
            if not collector.complete:
                self.panel.show(["Key read.", "Remove the key."])
        return pin

    async def _ask_pin(self, color: Color, label: str, keyset_id: bytes | None) -> str:
        prompt = Prompt(PromptKind.PIN, color=color, label=label, keyset_id=keyset_id, op=self._op)
        while True:
            pin = await self._digits(["Enter PED PIN:"], prompt, allow_empty=False)
            try:
                validate_pin(pin)
            except kerr.InvalidPin:
                self.panel.show(["PIN must be 4-48", "digits."])
                continue
            # A wrong PIN cannot be detected here (nothing stores it): the HSM will find a
            # wrong secret.  The event says a PIN was entered, never what or how long.
            self._event(EventKind.PIN_ENTERED, color, keyset_id, "ok")
            return pin

    # ---------------------------------------------------------------------- imprint
    async def _imprint(
        self,
        color: Color,
        label: str,
        new_secret: bytes | bytearray | None,
        allow_reuse: bool,
        session: int,
        emit: Emit,
    ) -> ImprintOutcome:
        op = self._op
        reuse = False
        if allow_reuse:
            reuse = new_secret is None or await self._yes_no(
                [f"{color.label.upper()} key:", "Reuse an existing", "keyset?", "YES / NO"],
                Prompt(PromptKind.YES_NO, color=color, label=label, question="reuse", op=op),
            )
        if reuse:
            return await self._imprint_reuse(color, label)
        assert new_secret is not None
        m = await self._number(
            ["M value? (1-16)", "Keys needed to log in."],
            Prompt(
                PromptKind.NUMBER, color=color, label=label, question="m", low=1, high=16, op=op
            ),
        )
        n = await self._number(
            [f"N value? ({m}-16)", "Keys to make."],
            Prompt(
                PromptKind.NUMBER, color=color, label=label, question="n", low=m, high=16, op=op
            ),
        )
        pin = await self._new_pin(color, label)
        copies = await self._ask_copies(color, label)
        secret = bytearray(new_secret)
        images = new_keyset(color, label, m, n, pin is not None, secret)
        try:
            keyset_id = images[0].keyset_id
            assert keyset_id is not None
            written = await self._write_keys(images, copies, color, label)
            derived = None
            if pin is not None:
                self.panel.show(["Finishing...", "Please wait."])
                derived = await trio.to_thread.run_sync(secret_for_hsm, secret, keyset_id, pin)
            del pin
            self.panel.show(["Imprint complete.", f"{written} key(s) written."])
            return ImprintOutcome(
                color, keyset_id, m, n, derived is not None, written, False, derived
            )
        finally:
            wipe(secret)
            for image in images:
                image.wipe()

    async def _imprint_reuse(self, color: Color, label: str) -> ImprintOutcome:
        collector = ShareCollector(color, None)
        images: list[KeyImage] = []
        try:
            pin = await self._collect(collector, label, images)
            header = collector.header
            assert header is not None and header.keyset_id is not None
            copies = await self._ask_copies(color, header.label)
            written = 0
            if copies:
                written = await self._write_keys(
                    images, copies, color, header.label, originals=False
                )
            secret = await _for_hsm(collector, pin)
            del pin
            return ImprintOutcome(
                color,
                header.keyset_id,
                header.m,
                header.n,
                header.pin_protected,
                written,
                True,
                secret,
            )
        finally:
            collector.wipe()
            for image in images:
                image.wipe()

    async def _new_pin(self, color: Color, label: str) -> str | None:
        prompt = Prompt(PromptKind.NEW_PIN, color=color, label=label, op=self._op)
        lines = ["New PED PIN?", "4-48 digits, or", "ENTER for none."]
        while True:
            pin = await self._digits(lines, prompt, allow_empty=True)
            if not pin:
                return None
            try:
                validate_pin(pin)
            except kerr.InvalidPin:
                lines = ["PIN must be 4-48", "digits; ENTER for", "none."]
                continue
            again = await self._digits(
                ["Confirm new PED PIN:"],
                Prompt(PromptKind.CONFIRM_PIN, color=color, label=label, op=self._op),
                allow_empty=False,
            )
            if again == pin:
                return pin
            lines = ["PINs differ.", "New PED PIN?", "ENTER for none."]

    async def _ask_copies(self, color: Color, label: str) -> int:
        duplicating = await self._yes_no(
            ["Are you duplicating", "this PED Key?", "YES / NO"],
            Prompt(PromptKind.YES_NO, color=color, label=label, question="duplicate", op=self._op),
        )
        if not duplicating:
            return 0
        return await self._number(
            ["Copies of each key?", "(1-16)"],
            Prompt(
                PromptKind.NUMBER,
                color=color,
                label=label,
                question="copies",
                low=1,
                high=16,
                op=self._op,
            ),
        )

    async def _write_keys(
        self,
        images: list[KeyImage],
        copies: int,
        color: Color,
        label: str,
        *,
        originals: bool = True,
    ) -> int:
        """Write each image (unless not *originals*) and *copies* copies of it on blanks."""
        used: set[str] = {str(Path(i.path).resolve()) for i in images if i.path}
        written = 0
        total = len(images)
        for number, image in enumerate(images, start=1):
            rounds = ([0] if originals else []) + list(range(1, copies + 1))
            for copy in rounds:
                what = f"key {number} of {total}" if not copy else (f"copy {copy} of key {number}")
                prompt = Prompt(
                    PromptKind.INSERT_BLANK,
                    color=color,
                    label=label,
                    keyset_id=image.keyset_id,
                    index=number,
                    count=total,
                    question="copy" if copy else "key",
                    op=self._op,
                )
                path = await self._blank_target(
                    prompt, ["Insert a blank key:", f"{color.label.upper()} {what}"], used
                )
                await trio.to_thread.run_sync(write_image, path, image)
                used.add(str(path.resolve()))
                written += 1
                self._event(EventKind.KEY_WRITTEN, color, image.keyset_id, "ok", what)
                self.panel.show(["Key written.", "Remove the key."])
        return written

    async def _blank_target(self, prompt: Prompt, lines: list[str], used: set[str]) -> Path:
        while True:
            path = await self._present_key(prompt, self._with_refusal(lines))
            if str(path.resolve()) in used:
                self._event(EventKind.KEY_REFUSED, prompt.color, outcome="already-used")
                self._refuse("Key used already.")
                continue
            try:
                header = await trio.to_thread.run_sync(read_header, path)
            except kerr.MissingImage:
                self._event(EventKind.KEY_REFUSED, prompt.color, outcome="unreadable")
                self._refuse("No key there.")
                continue
            except kerr.KeyImageError:
                header = None  # a damaged key may be overwritten, after asking
            if header is not None and header.blank:
                return path
            what = header.describe() if header is not None else "a damaged key"
            overwrite = await self._yes_no(
                ["Key is not blank:", what[:32], "Overwrite it?", "YES / NO"],
                attrs.evolve(prompt, kind=PromptKind.YES_NO, question="overwrite"),
            )
            if overwrite:
                return path
            self._refuse("Not overwritten.")


async def _for_hsm(collector: ShareCollector, pin: str | None) -> bytearray:
    """The secret for the HSM; scrypt (PIN keys) runs in a thread, a plain copy does not."""
    if pin is None:
        return collector.secret_for_hsm(None)
    return await trio.to_thread.run_sync(collector.secret_for_hsm, pin)


_SECRET_PROMPTS = {PromptKind.PIN, PromptKind.NEW_PIN, PromptKind.CONFIRM_PIN}


def _short(exc: kerr.KeyImageError) -> str:
    return exc.problem[:40]


def _refusal_of(exc: kerr.KeyImageError, image: KeyImage) -> tuple[str, str]:
    if isinstance(exc, kerr.BlankKey):
        return "blank", "Key is blank."
    if isinstance(exc, kerr.WrongColor):
        actual = image.color.label.upper() if image.color else "?"
        return "wrong-colour", f"Wrong colour: {actual} key."
    if isinstance(exc, kerr.RepeatedShare):
        return "already-read", "Key already read."
    return "inconsistent", "Key damaged."


def _outcome_word(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, Unplugged):
        return "unplugged"
    if isinstance(exc, operr.OperationError) and exc.code is not None:
        return exc.code.name.lower().replace("_", "-")
    if isinstance(exc, trio.Cancelled):
        return "cancelled"
    return "error"


__all__ = ["DEFAULT_KEY_TIMEOUT", "ImprintOutcome", "PedEngine", "ReadOutcome", "Unplugged"]
