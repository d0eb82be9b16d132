"""Harness: the frame decoder on a byte stream cut in arbitrary pieces, every frame
it yields handed to every message decoder of its type.

Input: byte 0 = how many piece sizes follow (0-7), then that many bytes of piece sizes,
then the stream.

The input format is in ``fuzz.targets.one_frames``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["frames"])
