"""Command-line pieces every daemon shares: ``mode config``, ``mode stop``, no-mode help,
going to the background, and turning trio ExceptionGroups back into one error."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import trio

from ped.daemon.config import ConfigError, ConfigSchema, load_config, write_config
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.process import PidFile

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


def no_mode_message(prog: str, modes: Sequence[str]) -> str:
    """What a daemon says when called without a mode (Luna: "You must specify a mode.")."""
    return (
        "You must specify a mode.\n"
        f"Modes: {', '.join(modes)}\n"
        f"Example: {prog} mode {modes[0]}   (Luna spelling: {prog} -mode {modes[0]})\n"
        f"Run '{prog} mode --help' for details."
    )


def single_error(exc: BaseException) -> BaseException:
    """The one meaningful exception inside nested ExceptionGroups (else *exc* itself)."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if len(leaves) != 1:
            return exc
        exc = leaves[0]
    return exc


def config_command(
    *,
    schema: ConfigSchema,
    path: Path,
    show: bool,
    create: bool,
    set_pair: Sequence[str] | None,
    out: TextIO,
    err: TextIO,
    prog: str,
) -> int:
    """``mode config --show | --create | --set KEY VALUE``."""
    try:
        if create:
            if path.exists():
                backup = path.with_name(path.name + ".bak")
                shutil.copy2(path, backup)
                out.write(f"Saved the previous config as {backup}\n")
            write_config(path, schema.defaults(), schema,
                         header=f"{prog} configuration (command line beats this file)")
            out.write(f"Wrote the default configuration to {path}\n")
            return EXIT_OK
        if set_pair:
            name, text = set_pair
            key = schema.key(name)
            value = key.from_text(text)
            values = load_config(path, schema)
            values[key.name] = value
            write_config(path, values, schema,
                         header=f"{prog} configuration (command line beats this file)")
            out.write(f"Set {key.name} = {value!r} in {path}\n")
            out.write(f"A running {prog} keeps its settings until it is restarted.\n")
            return EXIT_OK
        values = load_config(path, schema)
        out.write(f"Configuration file: {path}{'' if path.exists() else ' (absent)'}\n")
        width = max(len(n) for n in schema.keys)
        for name, key in schema.keys.items():
            source = "file" if name in values else "default"
            value = values.get(name, key.default)
            out.write(f"  {name:<{width}} = {value!r:<24} ({source})\n")
        return EXIT_OK
    except ConfigError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    except OSError as exc:
        err.write(f"{prog}: cannot write {path}: {exc.strerror}\n")
        return EXIT_ERROR


def stop_command(
    *,
    control: Path,
    pid_path: Path,
    prog: str,
    out: TextIO,
    err: TextIO,
    timeout: float = 15.0,
) -> int:
    """``mode stop``: ask over the control socket, fall back to SIGTERM, wait until gone."""
    pidfile = PidFile(pid_path)
    pid = pidfile.running_pid()
    try:
        control_request_sync(control, "stop", timeout=5.0, what=prog)
    except ControlUnavailable:
        if pid is None:
            out.write(f"{prog} is not running.\n")
            return EXIT_OK
        os.kill(pid, signal.SIGTERM)
    except ControlError as exc:
        if exc.code != "closed":
            if pid is None:
                err.write(f"{prog}: {exc}\n")
                return EXIT_ERROR
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid is not None and pidfile.running_pid() == pid:
        if time.monotonic() > deadline:
            err.write(f"{prog} (pid {pid}) did not stop within {timeout:g} s\n")
            return EXIT_ERROR
        time.sleep(0.05)
    out.write(f"{prog} stopped.\n")
    return EXIT_OK
