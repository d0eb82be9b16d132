"""The demo as a program: `run_demo` runs the flow and always cleans up; `main` parses
``--dir`` and ``--log-level`` (what ``make demo`` and ``python -m pedtools.demo`` run)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from pedtools.demo.console import DemoFailed
from pedtools.demo.flow import Demo
from pedtools.demo.taps import TapThread
from pedtools.testing.procs import Site

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be changed from the main thread
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def run_demo(out: TextIO, *, directory: Path | None = None, log_level: str = "info") -> int:
    """Run the demo, printing to *out*; the exit status.  With *directory*, the scratch
    directory is kept there (daemons are still stopped); otherwise a temporary one is
    removed."""
    started = time.monotonic()
    site = Site(directory, prefix="ped-demo-")
    taps = TapThread().start()
    demo = Demo(site, out, taps, log_level=log_level)
    demo.say("Remote PED demo: an HSM logs its administrators in with PED keys read on a PED")
    demo.say("across the network (pedhsm -> pedclient -> TCP -> pedserver -> PED).")
    kept = "kept" if directory is not None else "removed at the end"
    demo.say(f"Scratch directory: DEMO={site.root} ({kept})")
    try:
        demo.flow()
    except DemoFailed as exc:
        demo.say()
        demo.say(f"DEMO FAILED: {exc}")
        _print_logs(demo)
        return EXIT_FAILED
    except KeyboardInterrupt:
        demo.say()
        demo.say("Interrupted: stopping the daemons and removing the scratch directory.")
        return EXIT_INTERRUPTED
    finally:
        with _interrupts_ignored():  # a second Ctrl-C must not leave daemons behind
            site.close()
            taps.close()
    demo.summary(started)
    left = "kept in " + str(site.root) if directory is not None else "removed"
    demo.say(f"Every daemon stopped; scratch directory {left}. Demo OK.")
    return 0


def _print_logs(demo: Demo) -> None:
    """The last lines of each daemon's log (they never hold a secret) to help find why."""
    for log in sorted([*demo.root.glob("home-*/*.log"), *demo.root.glob("*.log")]):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        demo.say(f"--- last lines of {demo.short(str(log))}")
        for line in lines:
            demo.say(f"    {demo.short(line)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pedtools.demo",
        description="The Remote PED demo (what `make demo` runs). Leaves nothing behind.",
    )
    parser.add_argument(
        "--dir", type=Path, help="use (and keep) this scratch directory instead of a temporary one"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="pedserver's and pedclient's log level (default info)",
    )
    args = parser.parse_args(argv)
    if args.dir is not None and len(str(args.dir.absolute())) > 60:
        parser.error("--dir: keep the path short (Unix socket paths are at most 107 bytes)")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run_demo(sys.stdout, directory=args.dir, log_level=args.log_level)
    finally:
        signal.signal(signal.SIGTERM, previous)
