"""Harness: every message decoder of every layer, by type registry.

Input: byte 0 picks a decoder from ``fuzz.targets.DECODERS`` (sorted by name, modulo
their number); the rest is the payload it decodes.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()
NAMES = sorted(targets.DECODERS)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    _type, decoder = targets.DECODERS[NAMES[data[0] % len(NAMES)]]
    try:
        decoder(data[1:])
    except targets.EXPECTED:
        pass


if __name__ == "__main__":
    run(test_one_input)
