"""The result of a conformance run: cases, their outcomes, the table and the JSON report.

A case is required or informative.  The run passes (exit 0) only when every required
case passed; an informative case (INFO) reports what was seen without judging it (a PED
may, for example, support more sessions than the documents require).  The module does no
I/O except `write_json`, so both suites and the tests share one rendering.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

#: The JSON report's format version (bump on an incompatible change).
REPORT_FORMAT = 1


class CaseOutcome(enum.Enum):
    """What a case found."""

    PASS = "PASS"  # noqa: S105 (an outcome word, not a password)
    FAIL = "FAIL"
    INFO = "INFO"  # informative: seen and reported, not judged
    SKIP = "SKIP"  # not run (a previous case made it impossible); counts as not passed


@attrs.frozen
class CaseResult:
    """One case: its number, the section it cites, what was expected and what was seen."""

    case: str  # "3.2": numbered within the suite
    title: str
    section: str  # "PROTOCOL.md 4.3", "device.md 2"
    expected: str
    seen: str
    outcome: CaseOutcome
    required: bool = True

    def failed(self) -> bool:
        """Whether this case stops the run from passing."""
        return self.required and self.outcome is not CaseOutcome.PASS


@attrs.frozen
class RunReport:
    """A whole run: which suite, against what, and every case in order."""

    suite: str  # "ped" or "hsm"
    target: str  # the device URI or the HSM under test, as given
    cases: tuple[CaseResult, ...]

    def passed(self) -> bool:
        return not any(case.failed() for case in self.cases)

    def exit_code(self) -> int:
        """0 when every required case passed, 1 otherwise."""
        return 0 if self.passed() else 1

    def counts(self) -> dict[str, int]:
        counts = {outcome.value: 0 for outcome in CaseOutcome}
        for case in self.cases:
            counts[case.outcome.value] += 1
        return counts

    def to_json(self) -> dict[str, object]:
        return {
            "format": REPORT_FORMAT,
            "suite": self.suite,
            "target": self.target,
            "passed": self.passed(),
            "counts": self.counts(),
            "cases": [
                {
                    "case": c.case, "title": c.title, "section": c.section,
                    "expected": c.expected, "seen": c.seen,
                    "outcome": c.outcome.value, "required": c.required,
                }
                for c in self.cases
            ],
        }


def render_table(cases: Iterable[CaseResult], width: int = 100) -> str:
    """The table a person reads: case, section, expected, seen, outcome (long cells wrap)."""
    rows = [("case", "section", "expected", "seen", "result")]
    for c in cases:
        mark = c.outcome.value if c.required else f"{c.outcome.value} (optional)"
        rows.append((c.case, c.section, c.expected, c.seen, mark))
    fixed = [max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)]
    result_w = max(len(r[4]) for r in rows)
    free = max(20, width - fixed[0] - fixed[1] - result_w - 8)
    text_w = max(10, free // 2)
    lines: list[str] = []
    for row in rows:
        expected = _wrap(row[2], text_w)
        seen = _wrap(row[3], text_w)
        for i in range(max(len(expected), len(seen))):
            first = i == 0
            lines.append("  ".join((
                (row[0] if first else "").ljust(fixed[0]),
                (row[1] if first else "").ljust(fixed[1]),
                (expected[i] if i < len(expected) else "").ljust(text_w),
                (seen[i] if i < len(seen) else "").ljust(text_w),
                row[4] if first else "",
            )).rstrip())
    return "\n".join(lines)


def summary_line(report: RunReport) -> str:
    counts = report.counts()
    verdict = "PASSED" if report.passed() else "FAILED"
    failed = [c.case for c in report.cases if c.failed()]
    tail = f"; required cases not passed: {', '.join(failed)}" if failed else ""
    return (f"pedconform {report.suite} {verdict}: {counts['PASS']} passed, "
            f"{counts['FAIL']} failed, {counts['INFO']} informative, "
            f"{counts['SKIP']} not run{tail}")


def write_json(report: RunReport, path: Path) -> None:
    """Write the report atomically (a reader never sees half a file)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(report.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _wrap(text: str, width: int) -> Sequence[str]:
    words = text.split()
    if not words:
        return [""]
    lines: list[str] = []
    line = ""
    for word in words:
        while len(word) > width:  # a long token (a hex value) is cut, not lost
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        candidate = f"{line} {word}" if line else word
        if len(candidate) > width and line:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines
