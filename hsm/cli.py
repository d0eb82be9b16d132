"""``pedhsm``: start the emulated HSM and run its shell commands.

``pedhsm mode start --home DIR [--serial S] [--local-ped URI] [--pedclient PATH]
[--ntls-port N] [--ntls-ip A] [--backup] [--foreground]`` starts the HSM (the daemon process *is*
the powered HSM); ``mode stop`` and ``mode show``.  Every other command is one
invocation that talks to the daemon over ``DIR/control.sock``: ``pedhsm hsm login``,
``pedhsm role login --partition P --name co``...  Luna's single-dash spellings
(``pedhsm hsm ped connect -ip A -port 1503``) are accepted, and LunaSH's
case-insensitive unique prefixes (``pedhsm hsm showP``, ``pedhsm partition sh -p P``;
`hsm.lunawords`).  ``pedhsm partition select -p P`` makes P the current partition for
this user (`hsm.current`), used by the commands that take a partition when none is
named.  pedhsm finds its HSM as pedserver and pedclient find their homes: ``--home
DIR``, else ``PEDHSM_HOME``, else the per-user default
(``~/.local/state/remote-ped/pedhsm``; ``/var/lib/remote-ped/pedhsm`` for root).
``--pedclient`` defaults to pedclient's own socket for the same user.

Exit status: 0 success; 1 the HSM refused or failed (the message says why); 2 bad
command line; 3 the HSM daemon is not running.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hsm.current import CURRENT, clear_current, read_current, write_current
from hsm.homes import HOME_ENV, default_pedclient, home_hint, pedclient_warning
from hsm.lunawords import AmbiguousWord, resolve_words
from hsm.shellparser import LOCAL_SELECT, LONG_COMMANDS, HsmUsageError, build_parser
from ped.cliutil import normalize_luna_argv

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DOWN = 0, 1, 2, 3
MAX_FILE = 64 * 1024
MAX_CHALLENGE = 256

COMMAND_WORDS = {"mode"}


def _read_file(path: str, what: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise HsmUsageError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise HsmUsageError(f"the {what} file {path} is larger than {limit} bytes")
    return data


def _request_args(ns: argparse.Namespace) -> dict[str, Any]:
    skip = {"home", "group", "command", "challenge_file", "value_file", "foreground",
            "log_level", "log_format", "none"}
    args = {
        k: v
        for k, v in vars(ns).items()
        if k not in skip and not k.endswith("_cmd") and v is not None
    }
    if getattr(ns, "challenge_file", None):
        data = _read_file(ns.challenge_file, "challenge", MAX_CHALLENGE + 2).rstrip(b"\r\n")
        if not data:
            raise HsmUsageError(f"the challenge file {ns.challenge_file} is empty")
        if len(data) > MAX_CHALLENGE:
            raise HsmUsageError(f"a challenge secret has at most {MAX_CHALLENGE} bytes")
        args["challenge"] = data.hex()
    if getattr(ns, "value_file", None):
        args["value"] = _read_file(ns.value_file, "value", MAX_FILE).hex()
    return args


def _home(ns: argparse.Namespace, *, create: bool) -> Path:
    from ped.daemon import resolve_home

    return resolve_home(ns.home, "pedhsm", env_var=HOME_ENV, create=create)


def _err(text: str) -> None:
    print(f"pedhsm: {text}", file=sys.stderr)


def _mode_start(ns: argparse.Namespace) -> int:
    from hsm.server import LOG_NAME, PID_NAME
    from ped.daemon import DaemonStartError, PidFile, start_background

    os.umask(0o077)  # state, log and sockets owner-only, whatever the caller's umask
    home = _home(ns, create=True)
    pid = PidFile(home / PID_NAME).running_pid()
    if pid is not None:
        _err(f"the HSM in {home} is already running (pid {pid}); `pedhsm mode stop` first")
        return EXIT_FAIL
    ns.pedclient = ns.pedclient or default_pedclient()
    if ns.foreground:  # the warning goes to the log (or the journal) once logging is set up
        return _run_foreground(ns, home)
    warning = pedclient_warning(ns.pedclient)
    if warning:
        _err(f"warning: {warning}")
    # -P: never import from the working directory (see ped.device.subprocess_driver).
    argv = [sys.executable, "-P", "-m", "hsm.cli", "mode", "start"]
    argv += ["--home", str(home), "--foreground"]
    for flag, value in (
        ("--serial", ns.serial),
        ("--local-ped", ns.local_ped),
        ("--pedclient", ns.pedclient),
        ("--log-level", ns.log_level),
        ("--log-format", ns.log_format),
        ("--ntls-ip", ns.ntls_ip),
    ):
        if value:
            argv += [flag, value]
    argv += ["--ntls-port", str(ns.ntls_port)]
    if ns.backup:
        argv.append("--backup")
    try:
        proc = start_background(argv, log_path=home / LOG_NAME, name="pedhsm")
    except DaemonStartError as exc:
        _err(f"the HSM did not start: {exc}")
        return EXIT_FAIL
    print(f"pedhsm started (pid {proc.pid}, home {home}).")
    return EXIT_OK


def _run_foreground(ns: argparse.Namespace, home: Path) -> int:
    import trio

    from hsm.errors import HsmError
    from hsm.server import LOG_NAME, PID_NAME, Daemon
    from ped.daemon import (
        READY_FD_ENV,
        ControlError,
        PidFile,
        notify_failed,
        notify_ready,
        setup_logging,
    )
    from ped.daemon.memkeep import tune_heap
    from ped.daemon.memtrace import install_from_env

    # Started in the background: the log file in the home, reopened at SIGHUP (rotation),
    # with stdout and stderr; in the foreground: stderr (systemd's journal).
    background = READY_FD_ENV in os.environ
    setup_logging("pedhsm", level=ns.log_level, log_format=ns.log_format,
                  log_file=home / LOG_NAME if background else None, capture_std=background)
    install_from_env("pedhsm")  # PED_TRACEMALLOC: the memory debug hook (off by default)
    tune_heap()  # big transient buffers in mappings of their own, not the heap
    warning = pedclient_warning(ns.pedclient)
    if warning:
        logging.getLogger("pedhsm").warning("%s", warning)
    pidfile = PidFile(home / PID_NAME)

    async def main() -> None:
        daemon = Daemon(home, serial=ns.serial, local_ped=ns.local_ped, pedclient=ns.pedclient,
                        ntls_port=ns.ntls_port, ntls_ip=ns.ntls_ip, backup=ns.backup)
        async with trio.open_nursery() as nursery:
            await nursery.start(daemon.run)
            pidfile.write()
            notify_ready(f"serial {daemon.hsm.serial}")

    try:
        trio.run(main)
    except (HsmError, ControlError) as exc:
        notify_failed(exc.message)
        _err(exc.message)
        return EXIT_FAIL
    except BaseExceptionGroup as group:
        first: BaseException = group
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        message = getattr(first, "message", None) or f"{type(first).__name__}: {first}"
        notify_failed(message)
        _err(message)
        return EXIT_FAIL
    except KeyboardInterrupt:
        pass
    finally:
        pidfile.remove()
    return EXIT_OK


def _mode_stop(ns: argparse.Namespace) -> int:
    from hsm.server import PID_NAME, SOCKET_NAME
    from ped.daemon import ControlError, PidFile, control_request_sync

    home = _home(ns, create=False)
    pidfile = PidFile(home / PID_NAME)
    pid = pidfile.running_pid()
    try:
        result = control_request_sync(home / SOCKET_NAME, "mode.stop", what="pedhsm")
    except ControlError as exc:
        _err(exc.message)
        return EXIT_DOWN if exc.code == "unavailable" else EXIT_FAIL
    except OSError as exc:
        _err(_broke_off(home, exc))
        return EXIT_DOWN
    deadline = time.monotonic() + 15
    while pid is not None and pidfile.running_pid() == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    print(result.get("text", "pedhsm stopped."))
    return EXIT_OK


def _send(ns: argparse.Namespace, command: str, args: dict[str, Any]) -> int:
    code, result = _call(ns, command, args)
    if code != EXIT_OK:
        return code
    home = _home(ns, create=False)
    current = read_current(home)
    text = result.get("text")
    if command in ("hsm.show", "partition.show"):
        text = f"{text}\n   Current partition:     {current or '(none)'}"
    if text:
        print(text)
    if command == "partition.delete" and current is not None and args.get("name") == current:
        clear_current(home)
    return EXIT_OK


def _select(ns: argparse.Namespace) -> int:
    """``partition select``: check that the partition exists, then remember it."""
    home = _home(ns, create=False)
    if ns.none:
        cleared = clear_current(home)
        print("No current partition." if cleared else "No current partition (none was chosen).")
        return EXIT_OK
    code, _ = _call(ns, "partition.show", {"name": ns.name})
    if code != EXIT_OK:
        return code
    write_current(home, ns.name)
    print(f"Current partition: {ns.name}")
    return EXIT_OK


def _fill_current(ns: argparse.Namespace) -> None:
    """A command that leaves its partition out uses the current one, if there is one."""
    dest = CURRENT.get(ns.command)
    if dest is None or getattr(ns, dest, None):
        return
    current = read_current(_home(ns, create=False))
    if current is None:
        words = ns.command.replace(".", " ")
        raise HsmUsageError(
            f"pedhsm {words}: --partition is required: name the partition, or choose a "
            "current one with `pedhsm partition select --partition NAME`"
        )
    setattr(ns, dest, current)


def _call(ns: argparse.Namespace, command: str, args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One request to the daemon: (EXIT_OK, its answer), or the exit status of a failure."""
    from hsm.server import SOCKET_NAME
    from hsm.waiting import WaitClock
    from ped.daemon import ControlError, control_request_sync

    home = _home(ns, create=False)
    timeout = 3600.0 if command in LONG_COMMANDS else 60.0

    while True:
        try:
            with WaitClock(sys.stdout) as waiting:
                if command not in LONG_COMMANDS:
                    waiting.ticking = False
                result = control_request_sync(
                    home / SOCKET_NAME,
                    command,
                    args,
                    timeout=timeout,
                    on_progress=lambda item: waiting.line(str(item)),
                    what=f"the HSM in {home}",
                )
        except ControlError as exc:
            if exc.code == "confirmation-required" and not args.get("force") and _ask(exc.message):
                args = {**args, "force": True}
                continue
            if exc.code == "unavailable":
                _err(f"{exc.message} ({home_hint(ns.home)})")
                return EXIT_DOWN, {}
            _err(exc.message)
            return EXIT_FAIL, {}
        except OSError as exc:
            _err(_broke_off(home, exc))
            return EXIT_DOWN, {}
        return EXIT_OK, result


def _broke_off(home: Path, exc: OSError) -> str:
    """The daemon's connection broke mid-answer (killed, crashed): say so, no traceback."""
    return (
        f"the HSM in {home} broke off its answer ({exc.strerror or type(exc).__name__}): "
        "its daemon stopped or was killed; `pedhsm mode show` says whether it runs"
    )


def _ask(message: str) -> bool:
    if not sys.stdin.isatty():
        return False
    print(f"WARNING: {message.split(';')[0]}.", file=sys.stderr)
    try:
        answer = input("Type 'proceed' to continue, anything else to stop: ")
    except EOFError:
        return False
    return answer.strip().lower() == "proceed"


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        ns = parser.parse_args(resolve_words(parser, normalize_luna_argv(raw, COMMAND_WORDS)))
        if ns.command == "mode.start":
            return _mode_start(ns)
        if ns.command == "mode.stop":
            return _mode_stop(ns)
        if ns.command == LOCAL_SELECT:
            return _select(ns)
        _fill_current(ns)
        return _send(ns, ns.command, _request_args(ns))
    except AmbiguousWord as exc:
        _err(str(exc))
        return EXIT_USAGE
    except HsmUsageError as exc:
        _err(str(exc).removeprefix("pedhsm: "))
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version: argparse has printed them
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_FAIL
    except Exception as exc:  # a HomeError and friends: say what, no traceback
        from ped.errors import PedError

        if isinstance(exc, PedError):
            _err(str(exc))
            return EXIT_FAIL
        raise


if __name__ == "__main__":
    sys.exit(main())
