"""`pedconform hsm` without a template: a person runs each step on the HSM and answers the
suite's questions.  Here the "person" runs `pedtools.conform.hsm_double` by hand (in a worker
thread) and types what it saw; the verdicts are those of a run through a template."""

from __future__ import annotations

import json
import re
from pathlib import Path

import trio

from pedtools.conform import hsm_double
from pedtools.conform.faulty_ped import FaultyPed, Wire
from pedtools.conform.hsm_cases import Context
from pedtools.conform.hsm_link import LinkServer
from pedtools.conform.hsm_steps import DEFAULT_WORDS, StepRunner
from pedtools.conform.hsm_suite import _run_cases
from pedtools.conform.report import CaseOutcome
from pedtools.testing import make_keyring

#: the start of the example the suite prints ("(pedhsm: `pedhsm hsm login`)") -> the step
STEP_OF_WORDS = {
    f"`pedhsm {words.split(' --ip')[0]}": step for step, words in DEFAULT_WORDS.items()
}


class Person:
    """Reads what the suite says, runs that step of the HSM double, answers."""

    def __init__(self, tmp: Path, keyring: Path, sock: Path) -> None:
        self.argv = ["--state", str(tmp / "hsm"), "--keyring", str(keyring),
                     "--pedclient", str(sock)]
        self.state = tmp / "hsm" / "state.json"
        self.step = ""
        self.prompts: list[str] = []

    def read(self, line: str) -> None:
        for words, step in STEP_OF_WORDS.items():
            if words in line:
                self.step = step

    def answer(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if self.step == "show-counter":
            return str(json.loads(self.state.read_text())["failures"])
        if self.step == "show-link":  # what the double says of its link
            return "y" if json.loads(self.state.read_text()).get("connected") else "n"
        return "y" if hsm_double.main([*self.argv, self.step]) == 0 else "n"


async def test_a_run_by_hand_judges_as_a_run_by_template(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring"
    make_keyring(keyring, blanks=1)
    sock = tmp_path / "ped.sock"
    person = Person(tmp_path, keyring, sock)
    ped = FaultyPed(keyring, Wire())
    async with trio.open_nursery() as nursery:
        await nursery.start(LinkServer(ped).serve_unix, sock)
        runner = StepRunner(None, {"host": "", "port": "", "address": "", "pedclient": str(sock)},
                            say=person.read, ask=person.answer)
        ctx = Context(ped, runner, r"(\d+)")
        results = await _run_cases(ctx, ["3.3", "3.4", "4.1"])
        nursery.cancel_scope.cancel()
    outcomes = {r.case: r.outcome for r in results}
    assert outcomes == {c: CaseOutcome.PASS for c in ("1.1", "1.2", "3.3", "3.4", "4.1")}, results
    seen = {r.case: r.seen for r in results}
    assert "counter 0 -> 1 (counted)" in seen["3.4"]
    assert re.search(r"counter 0 -> 0 \(not counted\)", seen["3.3"])
    assert any("did it succeed?" in p for p in person.prompts)
    assert any("Type the number" in p for p in person.prompts)
    assert any("Does it say the HSM is connected" in p for p in person.prompts)
    assert "show-link: connected" in seen["1.1"]
    assert "show-link: not connected" in seen["4.1"]
