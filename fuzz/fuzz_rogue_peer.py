"""Harness: a rogue HSM or rogue PED that holds the right RPV sends arbitrary operation
plaintexts through a genuine channel; the other end's session must refuse them typed.

Input: byte 0 = selector (see ``fuzz.targets.rogue_peer``), then up to 8 plaintexts,
each a u16 big-endian length and that many bytes.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    plaintexts: list[bytes] = []
    offset = 1
    while offset + 2 <= len(data) and len(plaintexts) < 8:
        size = int.from_bytes(data[offset : offset + 2], "big")
        plaintexts.append(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    targets.rogue_peer(data[0], plaintexts)


if __name__ == "__main__":
    run(test_one_input)
