"""The emulated PED's front panel: an 8-line screen, a keypad and a key slot.

Theory of operation
-------------------
The engine (``engine.py``) *shows* a screen and then *waits* for the operator; operators
(``operators/``) *watch* the screen and *act*: press a key, insert a key image, remove
it, pull the cable.  The panel is the only thing between them, as the glass and the
buttons are on a real PED:

* `Screen` is what the engine shows: up to 8 lines of at most 32 characters, plus a
  machine-readable `Prompt` (what is asked: a key of some colour, a PIN, YES/NO, a
  number) so that the ``auto`` operator need not parse text.  The script operator
  matches the text; the tty operator draws it.  Each new screen has a new ``seq``.
* Operators send `Input`s (`Press`, `Insert`, `Remove`, `Unplug`) into a bounded queue
  that the engine reads with a timeout (the PED-key timeout).
* An operator that answers without waiting for anything (``auto``) may `observe` the
  panel instead of watching it from a task: its callback runs inside `show` and queues
  its answer with `send_nowait`, so the engine finds it there without a task switch.

A key in the slot stays there until removed; pressing ENTER asks the engine to read it.
Nothing on the panel holds a secret: an inserted key is a *path*; the engine reads it.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from keys.colors import Color

SCREEN_LINES = 8
SCREEN_COLUMNS = 32
IDLE_TEXT = "Awaiting command..."
INPUT_QUEUE = 64

#: Keypad keys.  Digits are "0"-"9".
KEYPAD = ("CLR", "<", ">", "YES", "NO", "ENTER", *(str(d) for d in range(10)))


class PromptKind(enum.Enum):
    IDLE = "idle"
    MESSAGE = "message"  # text only; any key continues (or nothing is awaited)
    INSERT_KEY = "insert-key"  # present an imprinted key of `color` (keyset, label)
    INSERT_BLANK = "insert-blank"  # present a blank key to imprint
    PIN = "pin"  # type the PED PIN of the key just read
    NEW_PIN = "new-pin"  # choose a PED PIN for the new keyset (ENTER alone: none)
    CONFIRM_PIN = "confirm-pin"  # type the new PIN again
    YES_NO = "yes-no"  # `question`: reuse | duplicate | overwrite | rpv-local
    NUMBER = "number"  # `question`: m | n | copies; between low and high
    PASSWORD = "password"  # noqa: S105 (a prompt name) the HSM's one-time password, `high` digits


@attrs.frozen
class Prompt:
    """What the PED waits for (machine-readable twin of the screen text)."""

    kind: PromptKind
    color: Color | None = None
    keyset_id: bytes | None = attrs.field(
        default=None, repr=lambda v: "None" if v is None else v.hex()
    )
    label: str = ""  # the keyset label the HSM asked for or the key just read
    question: str = ""
    low: int = 0
    high: int = 0
    index: int = 0  # which key of the operation (1-based), 0 = n/a
    count: int = 0  # of how many, 0 = not known yet
    op: int = 0  # which operation (one per HSM request) the prompt belongs to


@attrs.frozen
class Screen:
    seq: int
    lines: tuple[str, ...]
    prompt: Prompt
    #: True when this screen only echoes typing into the prompt already shown (a new
    #: digit, an erased one): an operator that answered the prompt must not answer again.
    echo: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@attrs.frozen
class Press:
    key: str = attrs.field()

    @key.validator
    def _check(self, _a: object, value: str) -> None:
        if value not in KEYPAD:
            raise ValueError(f"{value!r} is not a PED key; keys: {' '.join(KEYPAD)}")


def _as_path(value: str | Path) -> Path:
    # A Path already (the auto operator's, every login): no re-parse.
    return value if isinstance(value, Path) else Path(value)


@attrs.frozen
class Insert:
    path: Path = attrs.field(converter=_as_path)


@attrs.frozen
class Remove:
    pass


@attrs.frozen
class Unplug:
    pass


Input = Press | Insert | Remove | Unplug


def layout(lines: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Wrap and cut text to the 8 x 32 screen."""
    out: list[str] = []
    for line in lines:
        words = line.split(" ")
        current = ""
        for word in words:
            candidate = f"{current} {word}" if current else word
            if len(candidate) <= SCREEN_COLUMNS:
                current = candidate
            else:
                if current:
                    out.append(current)
                current = word[:SCREEN_COLUMNS]
        out.append(current)
    return tuple(out[:SCREEN_LINES])


#: The same few screens come back for every login: lay each out once.  (Screen text is
#: never secret: a PIN shows as stars.)
_layout_cached = functools.lru_cache(maxsize=256)(layout)

_MESSAGE = Prompt(PromptKind.MESSAGE)


class Panel:
    """Screen out, inputs in (see the module docstring)."""

    def __init__(self) -> None:
        self._seq = 0
        self.screen = Screen(0, layout([IDLE_TEXT]), Prompt(PromptKind.IDLE))
        self._changed = trio.Event()
        self._watchers = 0  # tasks in `wait_screen`
        self._in_send, self._in_recv = trio.open_memory_channel[Input](INPUT_QUEUE)
        self.slot: Path | None = None  # the key currently inserted
        self.unplugged = trio.Event()
        self.history: list[Screen] = []  # every screen shown (tests, the tty's log)
        self._observers: list[Callable[[Screen], None]] = []

    # engine side ---------------------------------------------------------------------
    def show(
        self,
        lines: list[str] | tuple[str, ...],
        prompt: Prompt | None = None,
        *,
        echo: bool = False,
    ) -> Screen:
        self._seq += 1
        screen = Screen(self._seq, _layout_cached(tuple(lines)), prompt or _MESSAGE, echo)
        self.screen = screen
        self.history.append(screen)
        if len(self.history) > 200:
            del self.history[0]
        if self._watchers:
            # (Nobody waiting: a later `wait_screen` compares seq before it waits.)
            self._changed.set()
            self._changed = trio.Event()
        for observer in self._observers:
            observer(screen)
        return screen

    def idle(self) -> None:
        self.show([IDLE_TEXT], Prompt(PromptKind.IDLE))

    def drain(self) -> None:
        """Forget inputs typed before the current prompt (e.g. during a previous one)."""
        while True:
            try:
                item = self._in_recv.receive_nowait()
            except trio.WouldBlock:
                return
            self._track(item)

    @property
    def has_input(self) -> bool:
        """An input is queued (the engine will not wait for the next one)."""
        return self._in_recv.statistics().current_buffer_used > 0

    async def next_input(self, timeout: float = math.inf) -> Input | None:
        """The next input, or None after *timeout* seconds."""
        # An input already queued (the auto operator answers inside `show`) is taken
        # without a schedule point; the engine yields when it has to wait.
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            item = self._in_recv.receive_nowait()
        except trio.WouldBlock:
            with trio.move_on_after(timeout):
                item = await self._in_recv.receive()
                self._track(item)
                return item
            return None
        self._track(item)
        return item

    def _track(self, item: Input) -> None:
        if isinstance(item, Insert):
            self.slot = item.path
        elif isinstance(item, Remove):
            self.slot = None
        elif isinstance(item, Unplug):
            self.unplugged.set()

    # operator side -------------------------------------------------------------------
    def observe(self, callback: Callable[[Screen], None]) -> Callable[[], None]:
        """Call *callback* with each new screen, inside `show`; returns the unsubscriber.

        The callback must not block or raise: it runs in the engine's task.
        """
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def send_nowait(self, item: Input) -> None:
        """Queue an input without waiting; `trio.WouldBlock` when the queue is full."""
        if isinstance(item, Unplug):
            self.unplugged.set()
        self._in_send.send_nowait(item)

    async def wait_screen(self, after_seq: int) -> Screen:
        """The first screen newer than *after_seq* (returns at once if there is one)."""
        while self.screen.seq <= after_seq:
            self._watchers += 1
            try:
                await self._changed.wait()
            finally:
                self._watchers -= 1
        return self.screen

    async def send(self, item: Input) -> None:
        if isinstance(item, Unplug):
            self.unplugged.set()  # seen at once, even while the engine is busy
        await self._in_send.send(item)

    async def press(self, *keys: str) -> None:
        for key in keys:
            await self.send(Press(key))

    async def insert(self, path: str | Path, *, enter: bool = True) -> None:
        await self.send(Insert(Path(path)))
        if enter:
            await self.send(Press("ENTER"))

    async def type_digits(self, digits: str, *, enter: bool = True) -> None:
        for ch in digits:
            await self.send(Press(ch))
        if enter:
            await self.send(Press("ENTER"))
