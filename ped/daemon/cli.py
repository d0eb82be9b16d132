"""The command line every daemon shares: dispatch, ``mode config``, ``mode stop``, ``mode show``.

Each daemon keeps only what differs (its options, how it builds its service, what
``mode show`` prints); `daemon_main` parses (`ped.daemon.arguments`), runs a home command
(``appliance``/``peer``, ``certificate``) or ``mode config/stop/show`` here, and hands
the other modes (``start``: `ped.daemon.startup`) back to the daemon.  Messages and exit
codes are part of the interface: tests pin them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ped.daemon.arguments import no_mode_message, parse_command_line
from ped.daemon.config import ConfigError, ConfigSchema, load_config, write_config
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE
from ped.daemon.home import DaemonLayout, HomeError, resolve_home
from ped.daemon.pidfile import PidFile


def config_command(
    *,
    schema: ConfigSchema,
    path: Path,
    show: bool,
    create: bool,
    set_pairs: Sequence[Sequence[str]] | None,
    out: TextIO,
    err: TextIO,
    prog: str,
) -> int:
    """``mode config --show | --create | --set KEY VALUE [--set KEY VALUE...]``."""
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
        if set_pairs:
            values = load_config(path, schema)
            changed = []
            for name, text in set_pairs:  # all checked before the file is written
                key = schema.key(name)
                values[key.name] = key.from_text(text)
                changed.append(key.name)
            write_config(path, values, schema,
                         header=f"{prog} configuration (command line beats this file)")
            for name in changed:
                out.write(f"Set {name} = {values[name]!r} in {path}\n")
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


def home_or_none(
    home: str | None, prog: str, err: TextIO, *, create: bool = True
) -> Path | None:
    """The daemon's home directory (made if *create*), or None after saying why it is
    unusable."""
    try:
        return resolve_home(home, prog, create=create)
    except HomeError as exc:
        err.write(f"{prog}: {exc}\n")
        return None


ProgT = TypeVar("ProgT", bound=str)
#: A non-``mode`` command: ``command(prog, home, args, out, err)`` -> exit code.
HomeCommand = Callable[[ProgT, Path, argparse.Namespace, TextIO, TextIO], int]


def run_home_command(
    args: argparse.Namespace,
    *,
    prog: ProgT,
    commands: Mapping[str, HomeCommand[ProgT]],
    out: TextIO,
    err: TextIO,
) -> int | None:
    """Run a non-``mode`` command (``appliance``/``peer``, ``certificate``) as
    ``command(prog, home, args, out, err)``; None when *args* names none of *commands*."""
    command = commands.get(args.command)
    if command is None:
        return None
    if getattr(args, "action", None) is None:
        err.write(f"{prog}: '{prog} {args.command}' needs an action; "
                  f"see '{prog} {args.command} --help'\n")
        return EXIT_USAGE
    home = home_or_none(args.home, prog, err)
    if home is None:
        return EXIT_ERROR
    return command(prog, home, args, out, err)


L = TypeVar("L", bound=DaemonLayout)


@contextlib.contextmanager
def owner_only_files() -> Iterator[None]:
    """Run with umask 077: every file a daemon creates (logs, ``pins.sqlite3``, sockets,
    its child's files) is owner-only from its creation, whatever the caller's umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _writes_home(args: argparse.Namespace) -> bool:
    """Whether this ``mode`` command creates the home now: a read-only one (``show``,
    ``stop``, ``config --show``) never creates a mistyped ``--home``, and ``start``
    creates it only once its command line is good (`ped.daemon.startup`)."""
    if args.mode == "config":
        return bool(args.create or args.set)
    return False


def daemon_main(
    argv: Sequence[str] | None,
    *,
    prog: ProgT,
    modes: Sequence[str],
    command_words: Sequence[str],
    parser: argparse.ArgumentParser,
    home_commands: Mapping[str, HomeCommand[ProgT]],
    schema: ConfigSchema,
    layout: Callable[[Path], L],
    describe: Callable[[dict[str, Any]], list[str]],
    other_mode: Callable[[argparse.Namespace, L, Path], int],
    out: TextIO,
    err: TextIO,
) -> int:
    """A daemon's command line: parse, run a *home_commands* entry or ``mode config``,
    ``stop``, ``show`` (*describe* gives its lines), else ``other_mode(args, layout,
    config_path)`` (``start`` and the daemon's own modes); returns the exit code."""
    with owner_only_files():
        args = parse_command_line(argv, prog=prog, modes=modes, command_words=command_words,
                                  parser=parser, err=err)
        if isinstance(args, int):
            return args
        done = run_home_command(args, prog=prog, commands=home_commands, out=out, err=err)
        if done is not None:
            return done
        if args.command != "mode" or args.mode is None:
            err.write(no_mode_message(prog, modes) + "\n")
            return EXIT_USAGE
        home = home_or_none(args.home, prog, err, create=_writes_home(args))
        if home is None:
            return EXIT_ERROR
        where = layout(home)
        config_path = Path(args.config).expanduser() if args.config else where.config
        if args.mode == "config":
            return config_command(schema=schema, path=config_path, show=args.show,
                                  create=args.create, set_pairs=args.set, out=out, err=err,
                                  prog=prog)
        if args.mode == "stop":
            return stop_command(control=where.control, pid_path=where.pid, prog=prog, out=out,
                                err=err)
        if args.mode == "show":
            return show_command(control=where.control, home=where.home, prog=prog,
                                as_json=args.json, describe=describe, out=out, err=err)
        return other_mode(args, where, config_path)


def show_command(
    *,
    control: Path,
    home: Path,
    prog: str,
    as_json: bool,
    describe: Callable[[dict[str, Any]], list[str]],
    out: TextIO,
    err: TextIO,
) -> int:
    """``mode show [--json]``: ask the running daemon; *describe* gives the lines after
    the first for the human-readable form."""
    try:
        info = control_request_sync(control, "show", timeout=10.0, what=prog)
    except ControlUnavailable:
        if as_json:
            out.write(json.dumps({"running": False, "home": str(home)}) + "\n")
        else:
            out.write(f"{prog} is not running (home {home}).\n")
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    if as_json:
        out.write(json.dumps({"running": True, "home": str(home), **info}) + "\n")
        return EXIT_OK
    lines = [f"{prog} is running (pid {info.get('pid')}, home {home})", *describe(info)]
    out.write("\n".join(lines) + "\n")
    return EXIT_OK
