"""Harness: every message decoder of every layer, by type registry.

Input: byte 0 picks a decoder from ``fuzz.targets.DECODERS`` (sorted by name, modulo
their number); the rest is the payload it decodes.

The input format is in ``fuzz.targets.one_message``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["messages"])
