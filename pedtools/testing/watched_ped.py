"""An emulated PED on a Unix socket whose screen is written to a file, as an onlooker sees it.

    python -m pedtools.testing.watched_ped --screen-log FILE PEDEMU_OPTIONS...

takes ``pedemu``'s options (``--keyring``, ``--socket``, ``--operator``...; only
``--socket`` serving, one host at a time) and serves the same `EmulatedPed`, worked by the
same operators; it adds one thing: every screen the PED shows is appended to *FILE* as
one JSON line, ``{"seq": N, "prompt": KIND, "lines": [...]}``, written inside the panel's
own `Panel.observe` hook, so a screen is in the file before the PED sends the answer
that follows it.  Typing echoes (a PIN's stars as they grow) are left out.  Nothing on the
screen is secret (the panel shows a PIN as stars), so the file is not either.

The demo runs its PEDs this way to show what each screen says; pedserver reaches one as
``socket:PATH``.  SIGTERM or SIGINT ends it (status 0); bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket as _socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import trio

from ped.device.emulated.cli import UsageError, build_parser, make_operator
from ped.device.emulated.panel import Screen
from ped.device.emulated.server import EmulatedPed


def screen_record(screen: Screen) -> str:
    """One screen as the JSON line of the screen log."""
    return json.dumps(
        {"seq": screen.seq, "prompt": screen.prompt.kind.value, "lines": list(screen.lines)}
    )


class ScreenLog:
    """The panel hook: appends each new screen (not a typing echo) to an open file."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, screen: Screen) -> None:
        if screen.echo:
            return
        self.out.write(screen_record(screen) + "\n")
        self.out.flush()  # an onlooker reads it while the PED runs


async def _listen(path: str) -> trio.SocketListener:
    sock = trio.socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    # Bound under a temporary name and renamed once listening, as pedemu does: whoever
    # waits for the path to appear never sees "connection refused".
    temp = f"{path}.{os.getpid()}.tmp"
    old_umask = os.umask(0o177)  # the socket reaches a PED full of keys: owner only
    try:
        await sock.bind(temp)
        sock.listen(4)
        os.rename(temp, path)
    finally:
        os.umask(old_umask)
    return trio.SocketListener(sock)


async def _serve(ped: EmulatedPed, listener: trio.SocketListener) -> None:
    while True:
        stream = await listener.accept()
        async with ped.host_lock:  # one host at a time; the next waits its turn
            await ped.serve(stream)


async def _run(args: argparse.Namespace, screen_log: Path) -> int:
    ped = EmulatedPed(
        args.keyring,
        serial=args.serial,
        mode=args.mode,
        key_timeout=args.key_timeout,
    )
    operator = make_operator(args, ped.panel)
    with screen_log.open("a", encoding="utf-8") as out:
        ped.panel.observe(ScreenLog(out))
        listener = await _listen(args.socket)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(operator.run)
            nursery.start_soon(_serve, ped, listener)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
        with contextlib.suppress(OSError):
            os.unlink(args.socket)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m pedtools.testing.watched_ped"
    parser.add_argument(
        "--screen-log", required=True, type=Path, metavar="FILE",
        help="append every screen the PED shows to FILE (one JSON line each)",
    )
    args = parser.parse_args(argv)
    if args.socket is None:
        parser.error("serve on --socket PATH (a watched PED is reached as socket:PATH)")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="pedemu: %(message)s"
    )
    try:
        return trio.run(_run, args, args.screen_log)
    except (UsageError, OSError) as exc:
        print(f"watched_ped: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
