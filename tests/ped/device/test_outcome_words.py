"""One spelling of each outcome word: OP_FINISHED and KEY_REFUSED say `wrong-colour`, and
every word pedemu sends for a failed operation is in device.md's table (issue 19, 4.8)."""

from __future__ import annotations

import re

import pytest

from ped.device.emulated.dialog import Unplugged
from ped.device.emulated.engine import outcome_word
from ped.ops import errors as operr
from tests.ped.vectors.blocks import REPO

DEVICE_MD = REPO / "docs" / "protocol" / "device.md"


def _documented(kind: str) -> set[str]:
    row = re.search(rf"^\| \d \| {kind} \|.*\| (.*) \|$", DEVICE_MD.read_text(), re.MULTILINE)
    assert row is not None, kind
    return {word.strip() for word in row.group(1).split(",")}


def test_wrong_colour_has_one_spelling() -> None:
    assert outcome_word(operr.WrongColor()) == "wrong-colour"
    assert "wrong-colour" in _documented("OP_FINISHED") & _documented("KEY_REFUSED")
    assert "wrong-color" not in DEVICE_MD.read_text()


@pytest.mark.parametrize(
    "exc",
    [
        operr.WrongColor(),
        operr.KeysetMismatch(),
        operr.KeyTimeout(),
        operr.OperationCancelled(),
        operr.NoBlankKey(),
        operr.PedFault(),
        Unplugged(),
        RuntimeError("a bug"),
    ],
)
def test_op_finished_words_are_documented(exc: BaseException) -> None:
    assert outcome_word(exc) in _documented("OP_FINISHED")
