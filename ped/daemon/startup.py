"""Starting a daemon: refusing a second copy, the background child, the foreground run
(pid file, logging, signals, readiness) and its exit code."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import trio

from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.daemon.groups import single_error
from ped.daemon.home import DaemonLayout, HomeError, resolve_home
from ped.daemon.logs import setup_logging
from ped.daemon.memkeep import keep_memory, tune_heap
from ped.daemon.memtrace import install_from_env
from ped.daemon.pidfile import PidFile
from ped.daemon.process import (
    READY_FD_ENV,
    DaemonStartError,
    notify_failed,
    start_background,
)
from ped.daemon.signals import watch_reopen_signal, watch_stop_signals


def start_failed(prog: str, message: str, err: TextIO) -> None:
    """Tell a waiting parent (readiness pipe) and the user why the daemon cannot start."""
    notify_failed(message)
    err.write(f"{prog}: {message}\n")


def refuse_if_running(pid_path: Path, home: Path, prog: str, err: TextIO) -> bool:
    """True (after saying so) when a copy of the daemon already runs from this home."""
    running = PidFile(pid_path).running_pid()
    if running is None:
        return False
    start_failed(
        prog,
        f"{prog} is already running (pid {running}, home {home}); to start it with other "
        f"options, `{prog} mode stop` first",
        err,
    )
    return True


def child_command(
    prog: str, home: Path, config_path: Path, args: argparse.Namespace, dests: Sequence[str]
) -> list[str]:
    """The ``mode start --foreground`` command line a background start runs, passing on
    the options given (a flag for True, the option again for each item of a list)."""
    child = [sys.executable, "-P", "-m", prog, "mode", "start", "--foreground",
             "--home", str(home), "--config", str(config_path)]
    for dest in dests:
        value = getattr(args, dest)
        option = f"--{dest.replace('_', '-')}"
        if value is True:
            child.append(option)
            continue
        for one in value if isinstance(value, list) else [value]:
            if one is not None:
                child += [option, str(one)]
    return child


def start_command(
    *,
    prog: str,
    layout: DaemonLayout,
    config_path: Path,
    args: argparse.Namespace,
    dests: Sequence[str],
    foreground: Callable[[], int],
    started: Callable[[int], None],
    err: TextIO,
) -> int:
    """``mode start`` once the settings are good: make the home, refuse a second copy, then run
    ``foreground()`` (``--foreground``) or start a background child passing on the
    options in *dests* and report it with ``started(pid)``."""
    try:
        resolve_home(layout.home, prog)  # made now: the command line was good
    except HomeError as exc:
        start_failed(prog, str(exc), err)
        return EXIT_ERROR
    if refuse_if_running(layout.pid, layout.home, prog, err):
        return EXIT_ERROR
    if args.foreground:
        return foreground()
    child = child_command(prog, layout.home, config_path, args, dests)
    proc = start_child(child, log_path=layout.log, prog=prog, err=err)
    if proc is None:
        return EXIT_ERROR
    started(proc.pid)
    return EXIT_OK


def start_child(
    child: Sequence[str], *, log_path: Path, prog: str, err: TextIO
) -> subprocess.Popen[bytes] | None:
    """Start the background daemon and wait until it is ready; None after saying why not."""
    try:
        return start_background(list(child), log_path=log_path, name=prog)
    except DaemonStartError as exc:
        err.write(f"{prog}: could not start: {exc}\n")
        return None


class Service(Protocol):
    """What `start_service` runs: a daemon's server object."""

    async def serve(self, *, task_status: Any = ...) -> None: ...

    def request_stop(self, reason: str) -> None: ...


def begin_foreground(
    prog: str,
    *,
    pid_path: Path,
    log_path: Path,
    log_level: str,
    err: TextIO,
    log_format: str = "text",
) -> PidFile | None:
    """Set up logging (to the log file when started in the background, stdout and
    stderr with it) and take the pid file; None after saying why not.  The caller
    removes the pid file when done."""
    background = READY_FD_ENV in os.environ
    setup_logging(prog, log_file=log_path if background else None, level=log_level,
                  log_format=log_format, capture_std=background)
    install_from_env(prog)  # PED_TRACEMALLOC: the memory debug hook (off by default)
    tune_heap()  # big transient buffers in mappings of their own, not the heap
    pidfile = PidFile(pid_path)
    try:
        pidfile.write()
    except DaemonStartError as exc:
        start_failed(prog, str(exc), err)
        return None
    return pidfile


def run_until_stopped(
    prog: str,
    async_fn: Callable[..., Any],
    *args: Any,
    start_errors: tuple[type[BaseException], ...],
    err: TextIO,
) -> int:
    """``trio.run(async_fn, *args)``: 0 when it ends or on Ctrl-C, 1 after saying why for
    one of *start_errors*; anything else propagates."""
    try:
        trio.run(async_fn, *args)
    except BaseException as exc:
        error = single_error(exc)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_OK
        if isinstance(error, start_errors):
            start_failed(prog, str(error), err)
            return EXIT_ERROR
        raise
    return EXIT_OK


async def start_service(nursery: trio.Nursery, service: Service) -> Any:
    """Stop *service* on SIGTERM/SIGINT, reopen the logs on SIGHUP, start it, and give
    what its ``serve`` reports as started (its address); the nursery is cancelled when
    it ends."""

    def on_signal(signum: int) -> None:
        service.request_stop(f"signal {signal.Signals(signum).name}")

    await nursery.start(watch_stop_signals, on_signal)
    await nursery.start(watch_reopen_signal)
    nursery.start_soon(keep_memory)  # freed heap pages back to the system, once a minute

    async def run(task_status: trio.TaskStatus[Any]) -> None:
        await service.serve(task_status=task_status)
        nursery.cancel_scope.cancel()

    started = await nursery.start(run)
    # What the daemon built to start (modules, settings, its PED pool, listeners) lives as
    # long as it does: keep it out of every later collection.  A full collection walks
    # every tracked object and stops every link meanwhile (tens of ms under load).
    gc.freeze()
    return started
