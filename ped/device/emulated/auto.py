"""The ``auto`` operator: answers every PED prompt from a keyring, a PIN file and options.

For demos and CI.  It watches the panel and, for each new prompt:

* insert a key of a colour: presents the keyring's keys of that colour (and keyset, once
  the first is read), one share index at a time, each key at most once per operation;
  with none left it presses CLR (cancel), as an operator without the key would walk away;
* PED PIN: types the PIN of the keyset's label from the PIN file (``label = digits``
  lines, or one bare line of digits for every label; ``keys.pin`` reads it); without
  one it presses CLR;
* imprint questions: reuse (`AutoOptions.reuse`), M and N, a new PIN (from the PIN file
  by the new keyset's label when `AutoOptions.pin`), duplicates (`AutoOptions.duplicates`
  copies of each key); "Overwrite?" is always NO;
* insert a blank key: the keyring's blanks in name order; when none is left it makes a
  new blank file (a fresh key out of the drawer).

The defaults (1 of 1, no PIN, no duplicate, reuse no) make a bare keyring of blank keys
work.  The operator reads key *headers* only; secrets stay in the engine.

A long-running pedemu answers thousands of prompts, so the operator keeps the keyring's
headers between prompts and re-reads them only when the directory's listing changes
(names or inode numbers, from one ``scandir``: every key write is an atomic replace, a new
inode) or after it hands out a blank key (an imprint follows).  Even the ``scandir`` is
skipped while the directory's own ``stat`` (device, inode, mtime, ctime) is the one seen
at the last listing *and* that listing was taken more than `SETTLED` seconds after the
directory last changed: every name added, removed or replaced updates the directory's
mtime, and a change made later than `SETTLED` seconds after the last one cannot carry
the same timestamp even on a filesystem with coarse (1-2 s) timestamps.  It remembers
the keys presented for the current operation only.

The operator answers from the panel's `Panel.observe` hook, inside the engine's `show`:
its keys and presses are queued before the engine waits for them (no task switch per
prompt).  Its task only sends what did not fit in the panel's queue, and re-raises a
failure of the hook (which must not raise into the engine).
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from keys import KeyEntry, Keyring, pin_for_label, read_pin_file
from keys import errors as kerr
from ped.device.emulated.panel import KEYPAD, Input, Insert, Panel, Press, PromptKind, Screen

log = logging.getLogger("pedemu.auto")

_PRESS = {key: Press(key) for key in KEYPAD}  # frozen: one of each is enough

#: Seconds after the keyring directory's last change from which its mtime is trusted to
#: show the next change (more than the coarsest filesystem timestamp, FAT's 2 s).
SETTLED = 3.0


def _check_mn(instance: AutoOptions, _a: object, _v: object) -> None:
    if not 1 <= instance.m <= instance.n <= 16:
        raise ValueError(
            f"auto operator: need 1 <= M <= N <= 16 (got M={instance.m}, N={instance.n})"
        )


@attrs.frozen
class AutoOptions:
    m: int = attrs.field(default=1, validator=_check_mn)
    n: int = attrs.field(default=1, validator=_check_mn)
    pin: bool = False
    duplicates: int = attrs.field(default=0, validator=attrs.validators.in_(range(0, 17)))
    reuse: bool = False
    #: Answer YES when a local HSM connects without an orange key (local mode only).
    allow_local: bool = True


class AutoOperator:
    def __init__(
        self,
        panel: Panel,
        keyring: str | os.PathLike[str],
        *,
        pin_file: str | os.PathLike[str] | None = None,
        options: AutoOptions | None = None,
    ) -> None:
        self.panel = panel
        self.keyring = Keyring(keyring)
        self.pin_file = pin_file
        self.pins = read_pin_file(pin_file) if pin_file is not None else {}
        self.options = options or AutoOptions()
        # What was presented in the current operation (one at a time on a PED).
        self._op: int | None = None
        self._presented: set[Path] = set()
        self._indices: set[tuple[bytes | None, int]] = set()
        self._listing: frozenset[tuple[str, int]] | None = None
        self._stamp: tuple[int, int, int, int] | None = None
        self._entries: Sequence[KeyEntry] = ()
        # Inputs the panel's queue could not take yet, and a failure of the hook.
        self._backlog: collections.deque[Input] = collections.deque()
        self._sending = False
        self._failure: Exception | None = None
        self._work = trio.Event()

    async def run(self) -> None:
        """Answer every prompt from now on (see the module docstring)."""
        unsubscribe = self.panel.observe(self._on_screen)
        try:
            if self.panel.screen.seq:
                self._on_screen(self.panel.screen)  # shown before we watched
            while True:
                await self._work.wait()
                self._work = trio.Event()
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                self._sending = True
                try:
                    while self._backlog:
                        await self.panel.send(self._backlog.popleft())
                finally:
                    self._sending = False
        finally:
            unsubscribe()

    def _on_screen(self, screen: Screen) -> None:
        """The panel's hook: queue the answer to a new prompt at once."""
        if screen.echo:
            return
        try:
            self._backlog.extend(self.answer(screen))
        except Exception as exc:  # raised by our task, not into the engine's show()
            self._failure = exc
            self._work.set()
            return
        if self._sending:
            return  # our task is sending earlier inputs; these follow in order
        while self._backlog:
            try:
                self.panel.send_nowait(self._backlog[0])
            except trio.WouldBlock:
                self._work.set()
                return
            self._backlog.popleft()

    def _pin(self, label: str) -> str | None:
        try:
            return pin_for_label(self.pins, label, self.pin_file)
        except kerr.PinFileError:
            return None

    def answer(self, screen: Screen) -> list[Input]:
        """The inputs that answer *screen*'s prompt (none for a message or idle)."""
        p = screen.prompt
        o = self.options
        if p.kind is PromptKind.INSERT_KEY:
            path = self._pick_key(p.op, p.color, p.keyset_id)
            if path is None:
                log.warning(
                    "auto operator: no unused %s key in %s; cancelling",
                    p.color.label if p.color else "?",
                    self.keyring.directory,
                )
                return [_PRESS["CLR"]]
            return [Insert(path), _PRESS["ENTER"]]
        if p.kind is PromptKind.INSERT_BLANK:
            return [Insert(self._pick_blank(p.op)), _PRESS["ENTER"]]
        if p.kind is PromptKind.PIN:
            pin = self._pin(p.label)
            if pin is None:
                log.warning("auto operator: no PIN for %r in the PIN file; cancelling", p.label)
                return [_PRESS["CLR"]]
            return _digits(pin)
        if p.kind in (PromptKind.NEW_PIN, PromptKind.CONFIRM_PIN):
            pin = self._pin(p.label) if o.pin else None
            if o.pin and pin is None:
                log.warning("auto operator: pin=yes but no PIN for %r; cancelling", p.label)
                return [_PRESS["CLR"]]
            return _digits(pin or "")
        if p.kind is PromptKind.YES_NO:
            yes = {
                "reuse": o.reuse,
                "duplicate": o.duplicates > 0,
                "overwrite": False,
                "rpv-local": o.allow_local,
            }.get(p.question, False)
            return [_PRESS["YES" if yes else "NO"]]
        if p.kind is PromptKind.NUMBER:
            value = {"m": o.m, "n": o.n, "copies": max(o.duplicates, 1)}.get(p.question, p.low)
            return _digits(str(value))
        return []

    def _for_op(self, op: int) -> tuple[set[Path], set[tuple[bytes | None, int]]]:
        if op != self._op:
            self._op = op
            self._presented = set()
            self._indices = set()
        return self._presented, self._indices

    def _scan(self) -> Sequence[KeyEntry]:
        """The keyring's entries, re-read only when its listing changed."""
        try:
            st = os.stat(self.keyring.directory)
        except OSError:
            st = None  # let Keyring report the problem its own way
        stamp = None if st is None else (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        if stamp is not None and stamp == self._stamp and self._listing is not None:
            return self._entries  # the directory has not changed since a settled listing
        try:
            with os.scandir(self.keyring.directory) as it:
                listing = frozenset((e.name, e.inode()) for e in it)
        except OSError:
            listing = None
        if listing is None or listing != self._listing:
            self._entries = self.keyring.entries()
            self._listing = listing
        # Trust the stamp only once the directory has been still for a while (see the
        # module docstring); until then every prompt compares the listing.
        settled = st is not None and time.time() - max(st.st_mtime, st.st_ctime) > SETTLED
        self._stamp = stamp if settled else None
        return self._entries

    def _pick_key(self, op: int, color: object, keyset_id: bytes | None) -> Path | None:
        presented, indices = self._for_op(op)
        for entry in self._scan():
            h = entry.header
            if h is None or h.blank or (color is not None and h.color != color):
                continue
            if keyset_id is not None and h.keyset_id != keyset_id:
                continue
            if entry.path in presented or (h.keyset_id, h.index) in indices:
                continue
            presented.add(entry.path)
            indices.add((h.keyset_id, h.index))
            return entry.path
        return None

    def _pick_blank(self, op: int) -> Path:
        presented, _ = self._for_op(op)
        # The blank handed out is about to be imprinted: read the keyring afresh next time.
        self._listing = None
        for entry in self._scan():
            if entry.ok and entry.blank and entry.path not in presented:
                presented.add(entry.path)
                self._listing = None
                return entry.path
        path = self.keyring.add_blanks(1)[0]
        presented.add(path)
        self._listing = None
        return path


def _digits(text: str) -> list[Input]:
    """Type *text* then ENTER."""
    return [*(_PRESS.get(ch) or Press(ch) for ch in text), _PRESS["ENTER"]]
