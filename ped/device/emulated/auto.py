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
inode) or after it hands out a blank key (an imprint follows).  It remembers the keys
presented for the current operation only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import attrs

from keys import KeyEntry, Keyring, pin_for_label, read_pin_file
from keys import errors as kerr
from ped.device.emulated.panel import Panel, PromptKind, Screen

log = logging.getLogger("pedemu.auto")


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
        self._entries: Sequence[KeyEntry] = ()

    async def run(self) -> None:
        seq = 0
        while True:
            screen = await self.panel.wait_screen(seq)
            seq = screen.seq
            if not screen.echo:
                await self.react(screen)

    def _pin(self, label: str) -> str | None:
        try:
            return pin_for_label(self.pins, label, self.pin_file)
        except kerr.PinFileError:
            return None

    async def react(self, screen: Screen) -> None:
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
                await self.panel.press("CLR")
            else:
                await self.panel.insert(path)
        elif p.kind is PromptKind.INSERT_BLANK:
            await self.panel.insert(self._pick_blank(p.op))
        elif p.kind is PromptKind.PIN:
            pin = self._pin(p.label)
            if pin is None:
                log.warning("auto operator: no PIN for %r in the PIN file; cancelling", p.label)
                await self.panel.press("CLR")
            else:
                await self.panel.type_digits(pin)
        elif p.kind in (PromptKind.NEW_PIN, PromptKind.CONFIRM_PIN):
            pin = self._pin(p.label) if o.pin else None
            if o.pin and pin is None:
                log.warning("auto operator: pin=yes but no PIN for %r; cancelling", p.label)
                await self.panel.press("CLR")
            else:
                await self.panel.type_digits(pin or "")
        elif p.kind is PromptKind.YES_NO:
            yes = {
                "reuse": o.reuse,
                "duplicate": o.duplicates > 0,
                "overwrite": False,
                "rpv-local": o.allow_local,
            }.get(p.question, False)
            await self.panel.press("YES" if yes else "NO")
        elif p.kind is PromptKind.NUMBER:
            value = {"m": o.m, "n": o.n, "copies": max(o.duplicates, 1)}.get(p.question, p.low)
            await self.panel.type_digits(str(value))

    def _for_op(self, op: int) -> tuple[set[Path], set[tuple[bytes | None, int]]]:
        if op != self._op:
            self._op = op
            self._presented = set()
            self._indices = set()
        return self._presented, self._indices

    def _scan(self) -> Sequence[KeyEntry]:
        """The keyring's entries, re-read only when its listing changed."""
        try:
            with os.scandir(self.keyring.directory) as it:
                listing = frozenset((e.name, e.inode()) for e in it)
        except OSError:
            listing = None  # let Keyring report the problem its own way
        if listing is None or listing != self._listing:
            self._entries = self.keyring.entries()
            self._listing = listing
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
