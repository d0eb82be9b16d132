"""Messages about a key's colour use the right article: "an orange key", "a blue key"."""

from __future__ import annotations

import re

from keys.colors import Color
from tests.ped.vectors.blocks import REPO


def test_a_label() -> None:
    assert Color.ORANGE.a_label == "an orange"
    assert Color.BLUE.a_label == "a blue"
    assert {c.a_label.split()[0] for c in Color} == {"a", "an"}


def test_no_message_builds_a_plain_a_before_a_colour() -> None:
    """A message never writes ``a {x.label}`` (that makes "a orange"); it uses ``a_label``."""
    pattern = re.compile(r"\ba \{[^}]*\.label\}")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for package in ("ped", "hsm", "keys", "pedserver", "pedclient", "hsmclient", "pedtools")
        for path in (REPO / package).rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
