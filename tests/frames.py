"""Frames as bytes, for tests that write raw wire data (the product encodes `Frame`s)."""

from __future__ import annotations

from ped.wire.framing import Frame, encode_frame


def frame_bytes(type_: int, payload: bytes = b"") -> bytes:
    return encode_frame(Frame(type_, payload))
