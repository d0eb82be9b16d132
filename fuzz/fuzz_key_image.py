"""Harness: the key-image parser (``keys.image.decode``, under ``keys.load_image``),
on the raw input and on the input with its SHA-256 digest recomputed.

The input format is in ``fuzz.targets.one_key_image``.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()

if __name__ == "__main__":
    run(targets.HARNESSES["key_image"])
