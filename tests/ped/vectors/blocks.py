"""Read the fenced ```vectors blocks of a document: one ``name = hex`` a line."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def document_vectors(path: Path) -> dict[str, str]:
    """Every ``name = value`` line of *path*'s ```vectors blocks (each name once)."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```vectors\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, f"{path.name} has no ```vectors block"
    vectors: dict[str, str] = {}
    for block in blocks:
        for line in block.strip().splitlines():
            name, _, value = line.partition(" = ")
            assert name.strip() not in vectors, f"vector {name} appears twice"
            vectors[name.strip()] = value.strip()
    return vectors
