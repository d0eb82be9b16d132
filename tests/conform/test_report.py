"""The run report: outcomes, exit code, the table and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from pedtools.conform.report import (
    REPORT_FORMAT,
    CaseOutcome,
    CaseResult,
    RunReport,
    render_table,
    summary_line,
    write_json,
)


def _case(
    number: str, outcome: CaseOutcome, *, required: bool = True, seen: str = "ok"
) -> CaseResult:
    return CaseResult(number, f"title {number}", "PROTOCOL.md 4", "expected text", seen,
                      outcome, required)


def test_only_required_cases_decide_the_exit_code() -> None:
    passing = RunReport("ped", "socket:/x", (
        _case("1.1", CaseOutcome.PASS), _case("3.12", CaseOutcome.FAIL, required=False),
        _case("3.13", CaseOutcome.INFO, required=False),
    ))
    assert passing.passed() and passing.exit_code() == 0
    for outcome in (CaseOutcome.FAIL, CaseOutcome.SKIP, CaseOutcome.INFO):
        report = RunReport("ped", "socket:/x", (_case("1.1", CaseOutcome.PASS),
                                                  _case("1.2", outcome)))
        assert report.exit_code() == 1, outcome


def test_summary_names_the_cases_not_passed() -> None:
    report = RunReport("ped", "u", (_case("1.1", CaseOutcome.PASS), _case("2.2", CaseOutcome.FAIL),
                                    _case("3.6", CaseOutcome.SKIP)))
    line = summary_line(report)
    assert line.startswith("pedconform ped FAILED: 1 passed, 1 failed, 0 informative, 1 not run")
    assert line.endswith("required cases not passed: 2.2, 3.6")
    assert "PASSED" in summary_line(RunReport("ped", "u", (_case("1.1", CaseOutcome.PASS),)))


def test_table_has_a_row_per_case_and_wraps_long_cells() -> None:
    long_seen = "z" * 150 + " and a few words that have to wrap onto further lines"
    cases = [_case("1.1", CaseOutcome.PASS),
             _case("3.12", CaseOutcome.INFO, required=False, seen=long_seen)]
    table = render_table(cases, width=80)
    lines = table.splitlines()
    assert lines[0].split() == ["case", "section", "expected", "seen", "result"]
    assert lines[1].startswith("1.1 ") and lines[1].endswith("PASS")
    row = next(i for i, line in enumerate(lines) if line.startswith("3.12"))
    assert lines[row].endswith("INFO (optional)")
    assert all(len(line) <= 100 for line in lines)
    assert "".join(line.strip() for line in lines[row:]).count("z") == 150  # cut, not lost


def test_json_report_round_trip(tmp_path: Path) -> None:
    report = RunReport("ped", "socket:/tmp/ped.sock", (
        _case("1.1", CaseOutcome.PASS), _case("2.2", CaseOutcome.FAIL, seen="HANDSHAKE_RESPONSE"),
    ))
    path = tmp_path / "report.json"
    write_json(report, path)
    data = json.loads(path.read_text())
    assert data == {
        "format": REPORT_FORMAT, "suite": "ped", "target": "socket:/tmp/ped.sock",
        "passed": False, "counts": {"PASS": 1, "FAIL": 1, "INFO": 0, "SKIP": 0},
        "cases": [
            {"case": "1.1", "title": "title 1.1", "section": "PROTOCOL.md 4",
             "expected": "expected text", "seen": "ok", "outcome": "PASS", "required": True},
            {"case": "2.2", "title": "title 2.2", "section": "PROTOCOL.md 4",
             "expected": "expected text", "seen": "HANDSHAKE_RESPONSE", "outcome": "FAIL",
             "required": True},
        ],
    }
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left
