"""What the demo prints: each command as it could be pasted, its output, and the PED screens.

A command line is printed quoted for a POSIX shell, with the scratch directory written
``$DEMO`` (the demo prints ``export DEMO=...`` first, so every line pastes as shown).
Every PED of the demo is a `pedtools.testing.watched_ped` writing its screens to a file;
after each command the demo prints the screens each PED showed meanwhile, one line each
(the screen's lines joined), under the command's output.  Typing echoes and the idle
screen are left out; nothing on a PED's screen is secret.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import attrs

from ped.errors import PedError
from pedtools.testing.procs import Result, Site, SiteError


class DemoFailed(PedError):
    """A step did not end as it should; the message names it."""


@attrs.frozen
class Step:
    number: int
    title: str
    result: Result


def shell_line(argv: Sequence[str], root: Path) -> str:
    """*argv* as a shell line, the scratch directory written ``$DEMO`` (still expanded)."""
    words = []
    for arg in argv:
        text = arg.replace(str(root), "$DEMO")
        if "$DEMO" not in text:
            words.append(shlex.quote(text))
        else:  # double quotes: $DEMO expands, & ? ; and spaces do not split
            escaped = re.sub(r'([\\"`$])', r"\\\1", text)
            words.append('"' + escaped.replace("\\$DEMO", "$DEMO") + '"')
    return " ".join(words)


@attrs.define
class WatchedScreen:
    """The screen log of one PED of the demo, read as it grows."""

    name: str
    path: Path
    offset: int = 0

    def new_screens(self) -> list[str]:
        """The screens shown since the last call, each as one line of text."""
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        shown = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            screen = json.loads(line)
            if screen["prompt"] != "idle":
                shown.append(" ".join(part for part in screen["lines"] if part))
        return shown


class Console:
    """Runs commands in a `Site` and prints them (see the module docstring)."""

    def __init__(self, site: Site, out: TextIO) -> None:
        self.site = site
        self.out = out
        self.root = site.root
        self.steps: list[Step] = []
        self.screens: list[WatchedScreen] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def short(self, text: str) -> str:
        return text.replace(str(self.root), "$DEMO")

    def section(self, title: str) -> None:
        self.say()
        self.say(f"== {title}")

    def show_command(self, prog: str, *args: str, background: bool = False) -> None:
        self.say(f"$ {shell_line([prog, *args], self.root)}{' &' if background else ''}")

    def run(self, title: str, prog: str, *args: str, expect: int = 0) -> Result:
        """Run one command, print it, fail the demo if its status is not *expect*."""
        self.show_command(prog, *args)
        try:
            result = self.site.run(prog, *args)
        except SiteError as exc:
            raise DemoFailed(f"{title}: {exc}") from None
        self.print_result(result)
        self.steps.append(Step(len(self.steps) + 1, title, result))
        if result.code != expect:
            raise DemoFailed(
                f"{title}: `{shell_line(result.argv, self.root)}` exited with status "
                f"{result.code} (expected {expect})"
            )
        return result

    def start(self, title: str, prog: str, home: Path, *args: str) -> Result:
        """``PROG mode start --home HOME ARGS``, printed; the daemon is the site's."""
        self.show_command(prog, "mode", "start", "--home", str(home), *args)
        try:
            result = self.site.start(prog, home, *args)
        except SiteError as exc:
            raise DemoFailed(f"{title}: {self.short(str(exc))}") from None
        self.print_result(result)
        self.steps.append(Step(len(self.steps) + 1, title, result))
        return result

    def start_ped(self, name: str, tag: str, *options: str) -> Path:
        """A watched emulated PED called *name* on ``$DEMO/ped-TAG.sock``; its socket."""
        sock = self.root / f"ped-{tag}.sock"
        screen = WatchedScreen(name, self.root / f"ped-{tag}-screen.jsonl")
        args = ("--socket", str(sock), "--screen-log", str(screen.path), *options)
        self.show_command("python", "-m", "pedtools.testing.watched_ped", *args, background=True)
        try:
            self.site.spawn("watched_ped", *args, ready=sock)
        except SiteError as exc:
            raise DemoFailed(f"{name}: {self.short(str(exc))}") from None
        self.screens.append(screen)
        return sock

    def print_result(self, result: Result) -> None:
        for line in self.short(result.output).rstrip("\n").splitlines():
            self.say(f"    {line}")
        status = "" if result.code == 0 else f", exit status {result.code}"
        self.say(f"    ({result.seconds:.2f} s{status})")
        for screen in self.screens:
            for text in screen.new_screens():
                self.say(f"    [{screen.name} screen] {text}")

    def expect(self, result: Result, *needles: str) -> None:
        for needle in needles:
            if needle not in result.output:
                raise DemoFailed(
                    f"`{shell_line(result.argv, self.root)}` did not say {needle!r}"
                )
