"""README's walk-through runs as a test, command by command, so README cannot drift.

Every command of README's sections "On the workstation", "On the HSM host", "Peer-to-peer",
"PED keys" and "The client path" (`tests.readme.readme_steps`) is one test, run as pasted
by bash on a scratch home with emulated PEDs (`tests.readme.walk` says exactly what it
substitutes), in README's order; each must exit 0 and print the lines README shows under it.

A command README shows that does not work today is marked ``xfail(strict=True)`` with
the section of issue 15 that fixes it (`BROKEN`): once fixed, the test passes, strict
xfail turns that into a failure, and the marker must go.  Run alone (``-k``, or spread
over workers), a step first runs the steps before it in its own scratch home.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.readme.readme_steps import Step, walkthrough
from tests.readme.walk import Extras, Walk

EXTRAS = Extras(
    broken={},
    # pedemu serves until stopped: a person leaves it running in its terminal
    background={
        "pedemu --keyring ~/ped-keys --socket /tmp/ped.sock --operator tty": "/tmp/ped.sock",
    },
    # the confirmation pedkey asks for, typed
    stdin={"pedkey erase KEYS/key-009.pedkey": "proceed\n"},
    # pedserver's default port (1503) would be the machine's own: this walk's instead
    before={
        "pedserver mode start --device socket:/tmp/ped.sock": (
            "pedserver mode config --set port 1503"
        ),
    },
    # a second `mode start` (the Luna spelling) beside the first: its own home and port
    isolated=frozenset({"pedserver -mode start -port 1503"}),
)

WALKTHROUGH = walkthrough()


def _param(step: Step) -> object:
    broken = EXTRAS.broken.get(step.bare)
    if broken is None:
        return pytest.param(step, id=step.id)
    # raises=: only the README command's own failure is expected, never the harness's
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=broken.why)]
    return pytest.param(step, id=step.id, marks=marks)


@pytest.fixture(scope="module")
def walks() -> Iterator[dict[str, Walk]]:
    started: dict[str, Walk] = {}
    yield started
    for walk in started.values():
        walk.close()


@pytest.mark.parametrize("step", [_param(s) for steps in WALKTHROUGH.values() for s in steps])
def test_readme_command_works_as_pasted(step: Step, walks: dict[str, Walk]) -> None:
    walk = walks.get(step.section)
    if walk is None:
        walk = walks[step.section] = Walk(step.section, WALKTHROUGH[step.section], EXTRAS)
    walk.reach(step.index)
    result = walk.run(step)
    assert result.code == 0, f"`{step.command}` exited {result.code}:\n{result.output}"
    for line in step.outputs:
        assert line in result.output, f"`{step.command}` did not print {line!r}"


def test_every_table_entry_is_a_readme_command() -> None:
    """A README edit must not leave a stale entry (a marker that no longer marks)."""
    commands = {step.bare for steps in WALKTHROUGH.values() for step in steps}
    for table in (EXTRAS.broken, EXTRAS.background, EXTRAS.stdin, EXTRAS.before):
        assert set(table) <= commands, set(table) - commands
    assert EXTRAS.isolated <= commands
