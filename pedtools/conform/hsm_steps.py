"""The steps `pedconform hsm` asks of the HSM under test: run through a template, or by a person.

A *step* is one thing the HSM does (``connect``, ``init``, ``login``...).  Each has the
words pedhsm understands (`DEFAULT_WORDS`; ``--step NAME=WORDS`` replaces them for
another HSM).  With ``--hsm-cmd TEMPLATE`` the suite runs the step itself: the template
is filled (`PLACEHOLDERS`), split like a shell line (no shell runs it) and executed; its
exit status and output are the step's result.  Without a template the suite prints what
to run and asks the tester how it went.  ``show-counter`` must print the HSM's failed-login
counter (or attempts left): `counter_value` finds it with ``--counter-pattern``;
``show-link`` prints the HSM's account of its link to the PED: `says_connected` looks for
``--connected-pattern`` in it (what the HSM tells its operator, checked against the truth).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable, Mapping

import attrs
import trio

from ped.errors import PedError

#: Step name -> pedhsm's words for it ({host} and {port} are filled in too).
DEFAULT_WORDS: dict[str, str] = {
    "connect": "hsm ped connect --ip {host} --port {port}",
    "disconnect": "hsm ped disconnect",
    "init": "hsm init --label pedconform",
    "login": "hsm login",
    "logout": "hsm logout",
    "show-counter": "hsm show",
    "show-link": "hsm ped show",
}
#: What each step asks of the HSM, for the person at the terminal and the documents.
STEP_MEANING: dict[str, str] = {
    "connect": "connect to the PED at {address} (the RPV handshake; an open link may stay)",
    "disconnect": "drop the link to the PED, so that the next connect is a new handshake",
    "init": "initialise the HSM on this PED (imprints at least the HSM SO's blue key)",
    "login": "log in as the role whose key the init step imprinted (HSM SO: blue)",
    "logout": "log that role out again",
    "show-counter": "print the failed-login counter of that role (or the attempts left)",
    "show-link": "show the state of the HSM's link to the PED (connected or not)",
}
#: pedhsm's ``hsm show`` line; the first group is the number.
DEFAULT_COUNTER_PATTERN = r"SO login attempts left:\s*(\d+)"
#: pedhsm's ``hsm ped show`` line while its remote PED link is up.
DEFAULT_CONNECTED_PATTERN = r"Connected:\s*yes"
PLACEHOLDERS: dict[str, str] = {
    "{command}": "the step's words (DEFAULT_WORDS or --step), themselves filled in",
    "{step}": "the step's name (connect, disconnect, init, login, logout, show-counter, "
              "show-link)",
    "{host}": "the address the suite's PED listens on (--listen)",
    "{port}": "its port",
    "{address}": "host:port",
    "{pedclient}": "the suite's local endpoint socket (--pedclient), else empty",
}
#: Longest a step may run before the suite stops it (a slow-PED case adds its delay).
DEFAULT_STEP_TIMEOUT = 300.0


@attrs.frozen
class StepResult:
    """How a step ended: *code* 0 is success; *output* the HSM's words (may be empty)."""

    step: str
    code: int | None  # None: the step was not run (the tester skipped it)
    output: str = ""
    seconds: float = 0.0
    #: ``show-link`` answered by a person: whether the HSM says it is connected
    said_connected: bool | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0

    def summary(self) -> str:
        if self.code is None:
            return f"{self.step}: not run"
        last = next((ln.strip() for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        said = f" ({last[:120]})" if last else ""
        return f"{self.step} exit {self.code}{said}"


class StepError(PedError):
    """A step could not be run at all (a bad template, a program not found)."""


@attrs.define
class StepRunner:
    """Runs steps; *template* None asks a person (`ask` reads a line; tests replace it)."""

    template: str | None
    values: Mapping[str, str]
    words: Mapping[str, str] = attrs.Factory(lambda: dict(DEFAULT_WORDS))
    timeout: float = DEFAULT_STEP_TIMEOUT
    say: Callable[[str], None] = print
    ask: Callable[[str], str] = input
    trace: bool = False  # print each step's command and result

    async def run(self, step: str, *, extra_time: float = 0.0) -> StepResult:
        done = await self._run(step, extra_time)
        if self.trace:
            self.say(f"  step {done.summary()} [{done.seconds:.1f} s]")
        return done

    def command_words(self, step: str) -> str:
        return fill(self.words.get(step, ""), self.values)

    def argv(self, step: str) -> list[str]:
        if self.template is None:
            raise StepError("no --hsm-cmd template")
        values = {**self.values, "command": self.command_words(step), "step": step}
        try:
            return shlex.split(fill(self.template, values))
        except ValueError as exc:
            raise StepError(f"--hsm-cmd does not split as a command line: {exc}") from None

    def available(self, step: str) -> bool:
        """Whether the HSM has words for *step* (an empty ``--step show-counter=`` says no)."""
        return bool(self.words.get(step, "").strip()) or self.template is None

    async def _run(self, step: str, extra_time: float) -> StepResult:
        if not self.available(step):
            return StepResult(step, None, "this HSM has no such step")
        if self.template is None:
            return await self._ask_person(step)
        argv = self.argv(step)
        started = trio.current_time()
        with trio.move_on_after(self.timeout + extra_time) as scope:
            try:
                done = await trio.run_process(
                    argv, capture_stdout=True, capture_stderr=True, check=False,
                    stdin=subprocess.DEVNULL,
                )
            except OSError as exc:
                raise StepError(f"cannot run `{shlex.join(argv)}`: {exc}") from None
        seconds = trio.current_time() - started
        if scope.cancelled_caught:
            return StepResult(step, 124, f"did not finish within {self.timeout + extra_time:g} s",
                              seconds)
        output = (done.stdout or b"").decode(errors="replace") + (done.stderr or b"").decode(
            errors="replace"
        )
        return StepResult(step, done.returncode, output, seconds)

    async def _ask_person(self, step: str) -> StepResult:
        meaning = fill(STEP_MEANING[step], self.values)
        words = self.command_words(step)
        self.say(f"\n>>> On your HSM: {meaning}.")
        if words:
            self.say(f"    (pedhsm: `pedhsm {words}`)")
        started = trio.current_time()
        if step == "show-counter":
            answer = await trio.to_thread.run_sync(
                self.ask, "    Type the number it shows (Enter if it shows none): "
            )
            return StepResult(step, 0 if answer.strip() else None, answer.strip())
        if step == "show-link":
            answer = await trio.to_thread.run_sync(
                self.ask, "    Does it say the HSM is connected to the PED? [y/n/s(kip)] "
            )
            word = answer.strip().lower()[:1]
            if word not in ("y", "n"):
                return StepResult(step, None, "skipped by the tester")
            return StepResult(step, 0, answer.strip(), said_connected=word == "y")
        answer = await trio.to_thread.run_sync(
            self.ask, "    Run it now; did it succeed? [y/n/s(kip)] "
        )
        seconds = trio.current_time() - started
        word = answer.strip().lower()[:1]
        if word == "s":
            return StepResult(step, None, "skipped by the tester", seconds)
        return StepResult(step, 0 if word == "y" else 1, answer.strip(), seconds)


def fill(text: str, values: Mapping[str, str]) -> str:
    """*text* with ``{name}`` replaced by *values* (unknown names are left as they are)."""
    return re.sub(r"\{([a-z-]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def counter_value(result: StepResult, pattern: str) -> int | None:
    """The number `show-counter` printed, or None (not run, not found)."""
    if result.code != 0:
        return None
    if re.fullmatch(r"\s*\d+\s*", result.output):
        return int(result.output)
    found = re.search(pattern, result.output)
    if found is None:
        return None
    try:
        return int(found.group(1) if found.groups() else found.group(0))
    except ValueError:
        return None


def says_connected(result: StepResult, pattern: str) -> bool | None:
    """Whether ``show-link`` said the HSM is connected to the PED; None if it did not run."""
    if result.code != 0:
        return None
    if result.said_connected is not None:
        return result.said_connected
    return re.search(pattern, result.output) is not None


def parse_step_overrides(items: list[str]) -> dict[str, str]:
    """``NAME=WORDS`` items of ``--step`` over `DEFAULT_WORDS` (an unknown name: ValueError)."""
    words = dict(DEFAULT_WORDS)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in DEFAULT_WORDS:
            raise ValueError(
                f"--step {item!r}: use NAME=WORDS with NAME one of {', '.join(DEFAULT_WORDS)}"
            )
        words[name] = value
    return words
