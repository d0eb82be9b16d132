"""Harness: the remote RPV initialisation's PED side, fed any PAKE_INIT and any password.

The input format is in ``fuzz.pake_targets.one_pake``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["pake"])
