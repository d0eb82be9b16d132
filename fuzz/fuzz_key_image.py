"""Harness: the key-image parser (``keys.image.decode``, under ``keys.load_image``),
on the raw input and on the input with its SHA-256 digest recomputed."""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()


def test_one_input(data: bytes) -> None:
    targets.decode_key_image(data)


if __name__ == "__main__":
    run(test_one_input)
