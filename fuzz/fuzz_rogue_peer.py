"""Harness: a rogue HSM or rogue PED that holds the right RPV sends arbitrary operation
plaintexts through a genuine channel; the other end's session must refuse them typed.

Input: byte 0 = selector (see ``fuzz.targets.rogue_peer``), then up to 8 plaintexts,
each a u16 big-endian length and that many bytes.

The input format is in ``fuzz.targets.one_rogue_peer``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["rogue_peer"])
