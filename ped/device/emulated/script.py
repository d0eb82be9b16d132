"""The ``script:FILE`` operator: a TOML list of steps, each "when the screen shows X, do Y".

Format (docs/protocol/device.md repeats it)::

    [settings]                 # optional
    timeout = 30               # default seconds to wait for each step's `expect` (0: none)
    keyring = "keys"           # where `insert` paths are relative to (default: the PED's
                               # keyring directory; relative to the script's directory)

    [[step]]
    expect = "Insert a BLUE"   # regex, case-insensitive, searched in the screen's lines
                               # joined by spaces; any screen shown since the last step
                               # counts.  Omitted: act at once.
    timeout = 10               # this step's own wait for `expect` (0: no limit)
    insert = "so.pedkey"       # put this key image in the slot ...
    enter = true               # ... and press ENTER (default true)
    remove = true              # take the key out
    pin = "1234"               # type digits, then ENTER (also for M, N, copies)
    pin_file = "otp.txt"       # the same with the digits of this file (relative to the
                               # script), waiting up to the step's timeout for it: a
                               # password the HSM shows while the PED already asks
    digits = "12"              # type digits without ENTER
    press = "YES"              # one key or a list: "CLR" "<" ">" "YES" "NO" "ENTER" "0".."9"
    wait = 250                 # let this many seconds pass (PED-key timeouts)
    unplug = true              # pull the PED's cable (pedemu ends; a driver sees DeviceGone)

A step's actions run in the order insert, remove, digits, pin, pin_file, press, wait,
unplug.
When a step's `expect` does not show up in time the script fails with `ScriptError`
naming the step, the pattern and the last screen; pedemu exits with status 1.
After the last step the operator does nothing more (`done` is set).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import trio

from ped.device.emulated.panel import KEYPAD, Panel, Press, Remove, Unplug
from ped.errors import PedError

DEFAULT_STEP_TIMEOUT = 30.0
MAX_SCRIPT_BYTES = 1024 * 1024
_KNOWN = {
    "expect",
    "timeout",
    "insert",
    "enter",
    "remove",
    "pin",
    "pin_file",
    "digits",
    "press",
    "wait",
    "unplug",
}


class ScriptError(PedError):
    """The script is malformed, or the PED did not show what a step expects."""


@attrs.frozen
class Step:
    number: int
    expect: re.Pattern[str] | None = None
    timeout: float = DEFAULT_STEP_TIMEOUT
    insert: Path | None = None
    enter: bool = True
    remove: bool = False
    digits: str = ""
    pin: str | None = attrs.field(default=None, repr=False)
    pin_file: Path | None = None
    press: tuple[str, ...] = ()
    wait: float = 0.0
    unplug: bool = False


def _fail(path: object, where: str, why: str) -> ScriptError:
    return ScriptError(f"{path}: {where}: {why}")


def load_script(path: str | os.PathLike[str], keyring: str | os.PathLike[str]) -> list[Step]:
    """Parse a script file; `ScriptError` names the step and field that is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read the script ({exc.strerror})") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise ScriptError(f"{path}: script is over {MAX_SCRIPT_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ScriptError(f"{path}: not valid TOML: {exc}") from None
    return parse_script(doc, path, keyring)


def parse_script(doc: dict[str, Any], path: Path, keyring: str | os.PathLike[str]) -> list[Step]:
    extra = set(doc) - {"settings", "step"}
    if extra:
        raise _fail(
            path, "top level", f"unknown table(s) {sorted(extra)}; use [settings] and [[step]]"
        )
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise _fail(path, "[settings]", "must be a table")
    default_timeout = _number(
        settings.get("timeout", DEFAULT_STEP_TIMEOUT), path, "settings.timeout"
    )
    base = Path(keyring)
    if "keyring" in settings:
        base = path.parent / str(settings["keyring"])
    raw_steps = doc.get("step", [])
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _fail(path, "[[step]]", "the script needs at least one [[step]]")
    steps = []
    for number, raw in enumerate(raw_steps, start=1):
        where = f"step {number}"
        if not isinstance(raw, dict):
            raise _fail(path, where, "must be a table")
        unknown = set(raw) - _KNOWN
        if unknown:
            raise _fail(path, where, f"unknown field(s) {sorted(unknown)}; known: {sorted(_KNOWN)}")
        expect = None
        if "expect" in raw:
            try:
                expect = re.compile(str(raw["expect"]), re.IGNORECASE)
            except re.error as exc:
                raise _fail(path, where, f"expect is not a valid regex: {exc}") from None
        press = raw.get("press", ())
        press = (press,) if isinstance(press, str) else tuple(press)
        for key in press:
            if key not in KEYPAD:
                raise _fail(path, where, f"press {key!r} is not a PED key ({' '.join(KEYPAD)})")
        for field in ("pin", "digits"):
            value = raw.get(field)
            if value is not None and not (
                (isinstance(value, str) and value.isdigit()) or value == ""
            ):
                raise _fail(path, where, f"{field} must be a string of digits")
        insert = raw.get("insert")
        steps.append(
            Step(
                number=number,
                expect=expect,
                timeout=_number(raw.get("timeout", default_timeout), path, f"{where} timeout"),
                insert=None if insert is None else base / str(insert),
                enter=bool(raw.get("enter", True)),
                remove=bool(raw.get("remove", False)),
                digits=str(raw.get("digits", "")),
                pin=None if raw.get("pin") is None else str(raw["pin"]),
                pin_file=None if "pin_file" not in raw else path.parent / str(raw["pin_file"]),
                press=press,
                wait=_number(raw.get("wait", 0), path, f"{where} wait"),
                unplug=bool(raw.get("unplug", False)),
            )
        )
    return steps


def _number(value: object, path: Path, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e7:
        raise _fail(path, where, "must be a number of seconds >= 0")
    return float(value)


class ScriptOperator:
    def __init__(self, panel: Panel, steps: list[Step]) -> None:
        self.panel = panel
        self.steps = steps
        self.done = trio.Event()

    async def run(self) -> None:
        cursor = 0
        for step in self.steps:
            if step.expect is not None:
                cursor = await self._expect(step, cursor)
            await self._act(step)
        self.done.set()
        await trio.sleep_forever()

    async def _expect(self, step: Step, cursor: int) -> int:
        assert step.expect is not None
        with trio.move_on_after(step.timeout if step.timeout else math.inf):
            while True:
                for screen in self.panel.history:
                    if screen.seq > cursor and step.expect.search(" ".join(screen.lines)):
                        return screen.seq
                seen = self.panel.screen.seq
                await self.panel.wait_screen(seen)
        last = " | ".join(self.panel.screen.lines)
        raise ScriptError(
            f"step {step.number}: the PED did not show /{step.expect.pattern}/ within "
            f"{step.timeout:g} s; the screen shows: {last}"
        )

    async def _act(self, step: Step) -> None:
        if step.insert is not None:
            await self.panel.insert(step.insert, enter=step.enter)
        if step.remove:
            await self.panel.send(Remove())
        if step.digits:
            await self.panel.type_digits(step.digits, enter=False)
        if step.pin is not None:
            await self.panel.type_digits(step.pin)
        if step.pin_file is not None:
            await self.panel.type_digits(await _digits_from(step))
        for key in step.press:
            await self.panel.send(Press(key))
        if step.wait:
            await trio.sleep(step.wait)
        if step.unplug:
            await self.panel.send(Unplug())


#: How often a `pin_file` step looks for its file (an operator glancing at a note).
PIN_FILE_POLL = 0.05


async def _digits_from(step: Step) -> str:
    """The digits in *step*'s pin_file once it holds some (bounded by the step timeout)."""
    assert step.pin_file is not None
    with trio.move_on_after(step.timeout if step.timeout else math.inf):
        while True:
            try:
                text = step.pin_file.read_text().strip().replace(" ", "")
            except OSError:
                text = ""
            if text.isdigit():
                return text
            await trio.sleep(PIN_FILE_POLL)
    raise ScriptError(
        f"step {step.number}: {step.pin_file} held no digits within {step.timeout:g} s"
    )
