"""The ``tty`` operator: the emulated PED drawn in a terminal, worked from the keyboard.

The screen is redrawn on every change: the PED's 8 lines in a box, what is in the key
slot, and the keys.  Keyboard to keypad:

    0-9      digits           Enter      ENTER
    y / n    YES / NO         Backspace  <  (also '<')     '>'  >
    c / Esc  CLR              i          insert a key: pick an image from the keyring
    r        remove the key   Ctrl-C     stop pedemu

Picking a key lists the keyring's images (colour, label, share, blank) by number; type
the number and Enter (Esc gives up).  The key then sits in the slot; press Enter on the
PED to have it read, as on the real device.  PIN digits are shown as stars by the
engine itself; nothing secret is ever drawn.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import trio

from keys import Keyring
from ped.device.emulated.panel import SCREEN_COLUMNS, SCREEN_LINES, Insert, Panel, Press, Remove

HELP = (
    " keys: 0-9  Enter=ENTER  y=YES  n=NO  Backspace=<  >  c/Esc=CLR",
    "       i=insert a key  r=remove the key  Ctrl-C=quit",
)
_MAP = {
    "\r": "ENTER",
    "\n": "ENTER",
    "y": "YES",
    "Y": "YES",
    "n": "NO",
    "N": "NO",
    "\x7f": "<",
    "\x08": "<",
    "<": "<",
    ">": ">",
    "c": "CLR",
    "C": "CLR",
    "\x1b": "CLR",
}


class TtyOperator:
    def __init__(
        self,
        panel: Panel,
        keyring: str | os.PathLike[str],
        *,
        stdin_fd: int = 0,
        stdout: TextIO | None = None,
    ) -> None:
        self.panel = panel
        self.keyring = Keyring(keyring)
        self.stdin_fd = stdin_fd
        self.out = stdout or sys.stdout
        self._picking: list[Path] | None = None
        self._typed = ""
        self._note = ""

    async def run(self) -> None:
        stream = trio.lowlevel.FdStream(os.dup(self.stdin_fd))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._redraw_loop)
                while True:
                    data = await stream.receive_some(256)
                    if not data:
                        nursery.cancel_scope.cancel()
                        return
                    for ch in data.decode("utf-8", "replace"):
                        await self._key(ch)
        finally:
            await stream.aclose()

    async def _redraw_loop(self) -> None:
        seq = -1
        while True:
            screen = await self.panel.wait_screen(seq)
            seq = screen.seq
            self.draw()

    async def _key(self, ch: str) -> None:
        if self._picking is not None:
            await self._pick_key(ch)
            return
        if ch.isdigit():
            await self.panel.send(Press(ch))
        elif ch in _MAP:
            await self.panel.send(Press(_MAP[ch]))
        elif ch in "iI":
            self._picking = self.keyring.paths()
            self._typed = ""
            self.draw()
        elif ch in "rR":
            await self.panel.send(Remove())
            self._note = "Key removed."
            await trio.sleep(0)
            self.draw()

    async def _pick_key(self, ch: str) -> None:
        assert self._picking is not None
        if ch == "\x1b":
            self._picking = None
        elif ch.isdigit():
            self._typed += ch
        elif ch in "\x7f\x08":
            self._typed = self._typed[:-1]
        elif ch in "\r\n" and self._typed:
            number = int(self._typed)
            if 1 <= number <= len(self._picking):
                path = self._picking[number - 1]
                self._picking = None
                await self.panel.send(Insert(path))
                self._note = f"Inserted {path.name}; press Enter on the PED."
                await trio.sleep(0)
            else:
                self._note = f"No key number {number}."
                self._typed = ""
        self.draw()

    def draw(self) -> None:
        lines = ["\x1b[2J\x1b[H", " Remote PED (emulated)", "+" + "-" * SCREEN_COLUMNS + "+"]
        shown = list(self.panel.screen.lines) + [""] * SCREEN_LINES
        for line in shown[:SCREEN_LINES]:
            lines.append("|" + line.ljust(SCREEN_COLUMNS) + "|")
        lines.append("+" + "-" * SCREEN_COLUMNS + "+")
        slot = self.panel.slot
        lines.append(f" slot: {slot.name if slot else '(empty)'}")
        if self._note:
            lines.append(f" {self._note}")
            self._note = ""
        lines.extend(HELP)
        if self._picking is not None:
            lines.append(" Keys in the keyring:")
            headers = {e.path: e for e in self.keyring.entries()}
            for number, path in enumerate(self._picking, start=1):
                entry = headers.get(path)
                if entry is None or entry.header is None:
                    what = "unreadable"
                else:
                    what = entry.header.describe()
                lines.append(f"  {number:2d}) {path.name}  {what}")
            lines.append(f" Key number (Enter inserts, Esc gives up): {self._typed}")
        self.out.write("\r\n".join(lines) + "\r\n")
        self.out.flush()
