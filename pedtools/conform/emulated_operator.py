"""The operator adapter of the emulated PED: relays ``pedconform ped``'s instructions to pedemu.

    python -m pedtools.conform.emulated_operator CONTROL_SOCKET

``pedconform ped --operator CMD`` writes one JSON instruction a line on this program's
stdin and reads one JSON answer a line from its stdout (docs/protocol/conformance.md).
This adapter passes each line, as it comes, to a pedemu started with ``--operator
control:CONTROL_SOCKET`` and prints pedemu's answers as they come (a ``reset`` must
reach pedemu while an earlier instruction still waits for its prompt).  pedemu acts on
its own panel with its own keyring, so no key and no secret passes here.  The socket is
connected again when it was lost (an ``emulated:`` PED is a new pedemu process per
connection), waiting up to `CONNECT_WAIT` seconds for it to appear.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Sequence

#: Seconds to wait for pedemu's control socket to accept a connection.
CONNECT_WAIT = 15.0

_out_lock = threading.Lock()


def _print(line: bytes) -> None:
    with _out_lock:
        sys.stdout.buffer.write(line.rstrip(b"\n") + b"\n")
        sys.stdout.buffer.flush()


def _connect(path: str) -> socket.socket:
    deadline = time.monotonic() + CONNECT_WAIT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _relay_answers(sock: socket.socket, alive: threading.Event) -> None:
    """Print every answer line pedemu sends until the socket ends."""
    buffer = b""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                _print(line)
    except OSError:
        return
    finally:
        alive.clear()


def _failure(line: bytes, why: str) -> bytes:
    reply: dict[str, object] = {"ok": False, "why": why}
    try:
        instruction = json.loads(line)
        if isinstance(instruction, dict) and "id" in instruction:
            reply["id"] = instruction["id"]
    except ValueError:
        pass
    return json.dumps(reply).encode()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m pedtools.conform.emulated_operator CONTROL_SOCKET\n"
              "(the path given to pedemu as --operator control:CONTROL_SOCKET)",
              file=sys.stderr)
        return 2
    path = args[0]
    sock: socket.socket | None = None
    alive = threading.Event()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            if sock is None or not alive.is_set():
                if sock is not None:
                    sock.close()
                sock = _connect(path)
                alive.set()
                threading.Thread(target=_relay_answers, args=(sock, alive), daemon=True).start()
            sock.sendall(line.rstrip(b"\n") + b"\n")
        except OSError as exc:
            _print(_failure(line, f"cannot reach pedemu's control socket {path}: {exc}"))
    if sock is not None:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
