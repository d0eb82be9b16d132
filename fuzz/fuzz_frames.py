"""Harness: the frame decoder on a byte stream cut in arbitrary pieces, every frame
it yields handed to every message decoder of its type.

Input: byte 0 = how many piece sizes follow (0-7), then that many bytes of piece sizes,
then the stream.
"""

from __future__ import annotations

from _harness import load_targets, run

targets = load_targets()


def test_one_input(data: bytes) -> None:
    if not data:
        return
    count = data[0] & 7
    sizes = list(data[1 : 1 + count]) or [len(data)]
    stream = data[1 + count :]
    targets.decode_stream(stream, iter(sizes * (len(stream) // max(1, sum(sizes)) + 1)))


if __name__ == "__main__":
    run(test_one_input)
