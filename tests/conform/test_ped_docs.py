"""docs/protocol/conformance.md names every case of ``pedconform ped`` and every
instruction of its operator adapter, as the code has them."""

from __future__ import annotations

from pathlib import Path

from pedtools.conform.ped_operator import INSTRUCTIONS
from pedtools.conform.ped_suite import ALL_CASES

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol" / "conformance.md"


def test_every_case_is_documented_as_the_code_has_it() -> None:
    text = DOC.read_text()
    for case in ALL_CASES:
        title = case.title + ("" if case.required else " (optional)")
        row = f"| {case.number} | {title} | {case.section} |"
        assert row in text, row
        assert case.expected in text or case.number == "1.4", case.number


def test_every_instruction_is_documented() -> None:
    text = DOC.read_text()
    for do, fields in INSTRUCTIONS.items():
        assert f"| `{do}` |" in text, do
        for field in fields:
            assert f"`{field}`" in text, (do, field)
