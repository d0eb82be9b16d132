"""A raw peer: send chosen bytes to a daemon's socket, read every frame it answers."""

from __future__ import annotations

from pathlib import Path

import trio

from ped.link.messages import decode
from ped.wire.framing import HEADER, HEADER_SIZE, MAGIC, WIRE_VERSION, Frame


def header(type_: int, length: int, version: int = WIRE_VERSION) -> bytes:
    return HEADER.pack(MAGIC, version, type_, length)


def split_frames(data: bytes) -> list[Frame]:
    frames = []
    while len(data) >= HEADER_SIZE:
        size = HEADER_SIZE + int.from_bytes(data[4:8], "big")
        frames.append(Frame(data[3], data[HEADER_SIZE:size]))
        data = data[size:]
    return frames


async def exchange(
    where: int | Path, *chunks: bytes, after: bytes = b"", wait: float = 20
) -> list[object]:
    """Connect (TCP port on 127.0.0.1, or a Unix socket path), send *chunks*, read until
    the daemon closes; return the link messages it answered (decoded).  *after* is sent
    once the daemon closed (the rest of an oversize frame: sent earlier, bytes the daemon
    never read could make the kernel reset the connection before we read its answer)."""
    with trio.fail_after(wait):
        if isinstance(where, int):
            stream: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", where)
        else:
            stream = await trio.open_unix_socket(str(where))
        answer = bytearray()
        async with stream:
            try:
                for chunk in chunks:
                    await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the daemon hung up before we finished: we read what it said
            try:
                while data := await stream.receive_some(65536):
                    answer += data
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            if after:
                try:
                    await stream.send_all(after)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the daemon is gone from this connection: as it should be
    return [decode(frame) for frame in split_frames(bytes(answer))]
