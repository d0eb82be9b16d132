"""Command-line pieces every daemon shares (pedserver, pedclient).

Each daemon keeps only what differs (its options, how it builds its service, what
``mode show`` prints); the plumbing lives here: parsing with Luna spellings and the
no-mode help, ``--home``/``--config``, ``mode config``, ``mode stop``, the frame of
``mode show``, starting in the background (refusing a second copy), the foreground run
(pid file, logging, signals, readiness), and turning trio ExceptionGroups back into one
error.  Messages and exit codes are part of the interface: tests pin them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import trio

from ped.cliutil import normalize_luna_argv
from ped.daemon.config import (
    LOG_LEVELS,
    ConfigError,
    ConfigSchema,
    load_config,
    write_config,
)
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.home import DaemonLayout, HomeError, resolve_home
from ped.daemon.logs import setup_logging
from ped.daemon.process import (
    READY_FD_ENV,
    DaemonStartError,
    PidFile,
    notify_failed,
    start_background,
)
from ped.daemon.signals import watch_stop_signals

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


# ----------------------------------------------------------------------------- parsing


def mode_parser(
    prog: str, *, description: str, epilog: str, modes: Sequence[str]
) -> tuple[argparse.ArgumentParser, Any, Any]:
    """The daemon's parser, its command sub-parsers (``mode``, then the daemon's own
    nouns) and the ``mode`` sub-parsers (``start``, ``stop``...)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    commands = parser.add_subparsers(dest="command", metavar="mode")
    mode = commands.add_parser("mode", help=f"start, stop, show or configure {prog}")
    mode_commands = mode.add_subparsers(dest="mode", metavar="{" + ",".join(modes) + "}")
    return parser, commands, mode_commands


def add_home_options(p: argparse.ArgumentParser, prog: str) -> None:
    """``--home`` and ``--config``/``--configfile``, on every sub-command."""
    p.add_argument("--home", metavar="DIR",
                   help=f"{prog}'s home (default: ${prog.upper()}_HOME or a per-user directory)")
    p.add_argument("--config", "--configfile", metavar="FILE",
                   help="config file (default: HOME/config.toml)")


def home_options(prog: str) -> Callable[[argparse.ArgumentParser], None]:
    """`add_home_options` for *prog*, in the one-argument form sub-parser builders take."""
    return functools.partial(add_home_options, prog=prog)


def add_idle_timeout_option(p: argparse.ArgumentParser) -> None:
    """``--idle-timeout S`` (Luna ``-idletimeout``)."""
    p.add_argument("--idle-timeout", "--idletimeout", dest="idle_timeout", type=int,
                   metavar="S", help="link idle timeout in seconds (default 1800)")


def add_socket_read_rsp_timeout_option(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--socket-read-rsp-timeout S`` (Luna ``-socketreadrsptimeout``)."""
    p.add_argument("--socket-read-rsp-timeout", "--socketreadrsptimeout",
                   dest="socket_read_rsp_timeout", type=int, metavar="S", help=help_text)


def add_log_level_option(p: argparse.ArgumentParser) -> None:
    """``--log-level L`` (Luna ``-loglevel``)."""
    p.add_argument("--log-level", "--loglevel", dest="log_level", choices=list(LOG_LEVELS))


def add_foreground_option(p: argparse.ArgumentParser) -> None:
    """``--foreground``/``-f``: serve in this process instead of going to the background."""
    p.add_argument("--foreground", "-f", action="store_true",
                   help="stay in the foreground, logging to stderr")


def add_stop_show_parsers(
    modes: Any, prog: str, *, stop_help: str, show_help: str
) -> None:
    """``mode stop`` and ``mode show [--json]``."""
    stop = modes.add_parser("stop", help=stop_help)
    add_home_options(stop, prog)
    show = modes.add_parser("show", help=show_help)
    add_home_options(show, prog)
    show.add_argument("--json", action="store_true", help="machine-readable output")


def add_config_parser(modes: Any, prog: str) -> None:
    """``mode config (--show | --create | --set KEY VALUE)``."""
    config = modes.add_parser("config", help="show, recreate or change the config file")
    add_home_options(config, prog)
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--show", action="store_true", help="print the settings in effect")
    what.add_argument("--create", action="store_true",
                      help="write the default config (the old one is kept as .bak)")
    what.add_argument("--set", nargs=2, metavar=("KEY", "VALUE"), help="change one setting")


def parse_command_line(
    argv: Sequence[str] | None,
    *,
    prog: str,
    modes: Sequence[str],
    command_words: Sequence[str],
    parser: argparse.ArgumentParser,
    err: TextIO,
) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when there is nothing to run (usage/help)."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args_list = normalize_luna_argv(raw, tuple(command_words))
    if not args_list or args_list == ["mode"]:
        err.write(no_mode_message(prog, modes) + "\n")
        return EXIT_USAGE
    try:
        return parser.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)


def home_or_none(home: str | None, prog: str, err: TextIO) -> Path | None:
    """The daemon's home directory, or None after saying why it is unusable."""
    try:
        return resolve_home(home, prog)
    except HomeError as exc:
        err.write(f"{prog}: {exc}\n")
        return None


HomeCommand = Callable[[str, Path, argparse.Namespace, TextIO, TextIO], int]


def run_home_command(
    args: argparse.Namespace,
    *,
    prog: str,
    commands: Mapping[str, HomeCommand],
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


def daemon_main(
    argv: Sequence[str] | None,
    *,
    prog: str,
    modes: Sequence[str],
    command_words: Sequence[str],
    parser: argparse.ArgumentParser,
    home_commands: Mapping[str, HomeCommand],
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
    home = home_or_none(args.home, prog, err)
    if home is None:
        return EXIT_ERROR
    where = layout(home)
    config_path = Path(args.config).expanduser() if args.config else where.config
    if args.mode == "config":
        return config_command(schema=schema, path=config_path, show=args.show,
                              create=args.create, set_pair=args.set, out=out, err=err,
                              prog=prog)
    if args.mode == "stop":
        return stop_command(control=where.control, pid_path=where.pid, prog=prog, out=out,
                            err=err)
    if args.mode == "show":
        return show_command(control=where.control, home=where.home, prog=prog,
                            as_json=args.json, describe=describe, out=out, err=err)
    return other_mode(args, where, config_path)


def cli_overrides(args: argparse.Namespace, overrides: Mapping[str, str]) -> dict[str, Any]:
    """Config key -> the value given on the command line (None where it was not given)."""
    return {key: getattr(args, dest) for dest, key in overrides.items()}


# ----------------------------------------------------------------------------- start


def start_failed(prog: str, message: str, err: TextIO) -> None:
    """Tell a waiting parent (readiness pipe) and the user why the daemon cannot start."""
    notify_failed(message)
    err.write(f"{prog}: {message}\n")


def refuse_if_running(pid_path: Path, home: Path, prog: str, err: TextIO) -> bool:
    """True (after saying so) when a copy of the daemon already runs from this home."""
    running = PidFile(pid_path).running_pid()
    if running is None:
        return False
    start_failed(prog, f"{prog} is already running (pid {running}, home {home})", err)
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
    """``mode start`` once the settings are good: refuse a second copy, then run
    ``foreground()`` (``--foreground``) or start a background child passing on the
    options in *dests* and report it with ``started(pid)``."""
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


# ----------------------------------------------------------------------------- foreground


class Service(Protocol):
    """What `start_service` runs: a daemon's server object."""

    async def serve(self, *, task_status: Any = ...) -> None: ...

    def request_stop(self, reason: str) -> None: ...


def begin_foreground(
    prog: str, *, pid_path: Path, log_path: Path, log_level: str, err: TextIO
) -> PidFile | None:
    """Set up logging (to the log file when started in the background) and take the pid
    file; None after saying why not.  The caller removes the pid file when done."""
    background = READY_FD_ENV in os.environ
    setup_logging(prog, log_file=log_path if background else None, level=log_level)
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
    """Stop *service* on SIGTERM/SIGINT, start it, and give what its ``serve`` reports as
    started (its address); the nursery is cancelled when it ends."""

    def on_signal(signum: int) -> None:
        service.request_stop(f"signal {signal.Signals(signum).name}")

    await nursery.start(watch_stop_signals, on_signal)

    async def run(task_status: trio.TaskStatus[Any]) -> None:
        await service.serve(task_status=task_status)
        nursery.cancel_scope.cancel()

    started = await nursery.start(run)
    # What the daemon built to start (modules, settings, its PED pool, listeners) lives as
    # long as it does: keep it out of every later collection.  A full collection walks
    # every tracked object and stops every link meanwhile (tens of ms under load).
    gc.freeze()
    return started


# ----------------------------------------------------------------------------- show


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
