"""README's walk-through as data: the commands of each section, in order, as pasted.

A section is the text under a ``## `` heading whose title starts with one of `SECTIONS`.
Its commands are the lines of its indented (4-space) code blocks: a line ending in ``\\``
goes on with the next; a line indented further right after a command is output README
shows for it (the test checks it is printed); a line starting with ``#`` is a comment.
A comment ``# Luna: CMD`` or ``# Luna spelling: CMD`` after a command is a step of its
own (README says the Luna spelling works too), run right after the command it annotates.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

README = Path(__file__).resolve().parents[2] / "README.md"

#: The sections walked through: a short key -> how the heading starts.
SECTIONS = {
    "workstation": "On the workstation",
    "hsm-host": "On the HSM host",
    "peer": "Peer-to-peer",
    "ped-keys": "PED keys",
    "client-path": "The client path",
}

_LUNA = re.compile(r"#\s*Luna(?: spelling)?:\s*(.+)$")


@attrs.frozen
class Step:
    section: str
    index: int
    command: str  # as pasted (a README comment stays: the shell ignores it)
    outputs: tuple[str, ...] = ()  # lines README shows it printing
    luna: bool = False  # a "# Luna: ..." spelling of the command before it

    @property
    def bare(self) -> str:
        """The command without a trailing comment, spaces collapsed (the table's key)."""
        return " ".join(self.command.split("  #")[0].split())

    @property
    def id(self) -> str:
        return f"{self.section}-{self.index:02d}"


def _sections(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        title, _, body = chunk.partition("\n")
        for key, start in SECTIONS.items():
            if title.startswith(start):
                found[key] = body
    missing = set(SECTIONS) - set(found)
    assert not missing, f"README has no section starting {[SECTIONS[k] for k in missing]}"
    return found


def _commands(section: str, body: str) -> list[Step]:
    steps: list[Step] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.startswith("    ") or line.startswith("     ") or line[4:5] == "#":
            continue
        command = line[4:].rstrip()
        while command.endswith("\\") and i < len(lines):
            command = command[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        outputs = []
        while i < len(lines) and lines[i].startswith("     "):
            outputs.append(lines[i].strip())
            i += 1
        steps.append(Step(section, len(steps) + 1, command, tuple(outputs)))
        luna = _LUNA.search(command)
        if luna:
            steps.append(Step(section, len(steps) + 1, luna.group(1).strip(), luna=True))
    return steps


def walkthrough(path: Path = README) -> dict[str, list[Step]]:
    """Every section's steps, in README's order."""
    return {key: _commands(key, body) for key, body in _sections(path.read_text()).items()}
