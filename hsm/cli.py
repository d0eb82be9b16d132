"""``pedhsm``: start the emulated HSM and run its shell commands.

``pedhsm mode start --home DIR [--serial S] [--local-ped URI] [--pedclient PATH]
[--foreground]`` starts the HSM (the daemon process *is* the powered HSM);
``mode stop`` and ``mode show``.  Every other command is one invocation that talks to the
daemon over ``DIR/control.sock``: ``pedhsm hsm login``, ``pedhsm role login --partition
P --name co``...  Luna's single-dash spellings (``pedhsm hsm ped connect -ip A -port
1503``) are accepted, and LunaSH's case-insensitive unique prefixes (``pedhsm hsm showP``,
``pedhsm partition sh -p P``; `hsm.lunawords`).  ``pedhsm partition select -p P`` makes P
the current partition for this user (`hsm.current`), used by the commands that take a
partition when none is named.  pedhsm finds its HSM as pedserver and pedclient find their
homes: ``--home DIR``, else ``PEDHSM_HOME``, else the per-user default
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
from hsm.homes import HOME_ENV, default_home_text, default_pedclient, home_hint, pedclient_warning
from hsm.lunawords import AmbiguousWord, resolve_words
from ped.cliutil import add_version_option, normalize_luna_argv
from ped.errors import PedError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DOWN = 0, 1, 2, 3
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
MAX_FILE = 64 * 1024
MAX_CHALLENGE = 256
LONG_COMMANDS = {
    # commands that wait for a person at the PED: no short socket timeout
    "hsm.init",
    "hsm.login",
    "hsm.ped.vector.init",
    "hsm.ped.connect",
    "partition.init",
    "role.init",
    "role.login",
    "role.resetpw",
    "partition.resetpw",
    "role.activate",
    "audit.init",
    "audit.login",
}

#: the shell's own command (hsm.current): it asks the HSM only whether the partition exists
LOCAL_SELECT = "partition.select"
_CURRENT_HELP = "the partition (default: the current one, `pedhsm partition select`)"


class HsmUsageError(PedError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise HsmUsageError(f"{self.prog}: {message}")


def _add_home(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Accepted at any level; only the top level sets the default (a sub-level default would
    # overwrite a --home given before the command words).
    p.add_argument(
        "--home",
        metavar="DIR",
        default=None if top else argparse.SUPPRESS,
        help=f"the HSM's home directory (default: {default_home_text()})",
    )


def _add_challenge(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--challenge-file",
        dest="challenge_file",
        metavar="FILE",
        help="a file holding the challenge secret",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pedhsm",
        description="Emulated PED-authenticated HSM and its administration shell.",
    )
    _add_home(parser, top=True)
    add_version_option(parser)
    groups = parser.add_subparsers(dest="group", metavar="GROUP", parser_class=_Parser)
    groups.required = True

    def leaf(sub: Any, name: str, command: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command=command)
        _add_home(p)
        return p

    def level(parent: Any, name: str, help_text: str) -> Any:
        p = parent.add_parser(name, help=help_text)
        _add_home(p)
        sub = p.add_subparsers(dest=f"{name}_cmd", metavar="COMMAND", parser_class=_Parser)
        sub.required = True
        return sub

    # mode
    mode = level(groups, "mode", "start, stop or show the HSM daemon")
    p = leaf(mode, "start", "mode.start", "power the HSM on (start the daemon)")
    p.add_argument("--serial", help="HSM serial number (fixed at the first start)")
    p.add_argument(
        "--local-ped",
        dest="local_ped",
        metavar="URI",
        help="a PED cabled to the HSM, e.g. emulated:DIR?operator=auto or usb",
    )
    p.add_argument(
        "--pedclient",
        metavar="PATH",
        help="pedclient's local socket, for a remote PED (default: pedclient's own socket "
        "for this user, PEDCLIENT_HOME/pedclient.sock or pedclient's default home)",
    )
    p.add_argument("--foreground", action="store_true", help="do not go to the background")
    # The same options as the relays' (ped.daemon.arguments, not imported here: the shell
    # starts on every command, and ped.daemon brings trio; tests/hsm checks they agree).
    p.add_argument("--log-level", "--loglevel", dest="log_level", choices=LOG_LEVELS,
                   default="info", help="log level (default info)")
    p.add_argument("--log-format", "--logformat", dest="log_format", choices=LOG_FORMATS,
                   default="text", help="log lines as text (default) or one JSON object per line")
    leaf(mode, "stop", "mode.stop", "power the HSM off (stop the daemon)")
    leaf(mode, "show", "mode.show", "show whether the HSM runs, and its state")

    # hsm
    hsm = level(groups, "hsm", "HSM-wide commands")
    p = leaf(hsm, "init", "hsm.init", "initialise the HSM (imprints blue and red PED keys)")
    p.add_argument("--label", required=True)
    p.add_argument("--force", action="store_true")
    leaf(hsm, "login", "hsm.login", "log in as HSM SO (blue PED key)")
    leaf(hsm, "logout", "hsm.logout", "log the HSM SO out")
    leaf(hsm, "show", "hsm.show", "label, serial, firmware, state, partitions")
    p = leaf(hsm, "zeroize", "hsm.zeroize", "erase every partition, object and role")
    p.add_argument("--force", action="store_true")
    leaf(hsm, "showpolicies", "hsm.showpolicies", "show the HSM policies")
    p = leaf(hsm, "changepolicy", "hsm.changepolicy", "change an HSM policy (SO)")
    p.add_argument("--policy", type=int, required=True)
    p.add_argument("--value", type=int, required=True)
    p.add_argument("--force", action="store_true")
    leaf(hsm, "tamper", "hsm.tamper", "signal a tamper event (clears the activation cache)")
    ped = level(hsm, "ped", "the PED the HSM uses")
    vector = level(ped, "vector", "the Remote PED Vector (orange key)")
    leaf(vector, "init", "hsm.ped.vector.init", "create an RPV (or read an orange key's)")
    leaf(vector, "erase", "hsm.ped.vector.erase", "erase the HSM's RPV")
    p = leaf(ped, "connect", "hsm.ped.connect", "connect to a Remote PED through pedclient")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--ip", help="pedserver's host name or address (standard mode)")
    where.add_argument(
        "--peer",
        metavar="NAME",
        help="peer-to-peer mode: the pedserver registered under NAME with "
        "`pedclient peer register`, which dials pedclient over pinned mutual TLS",
    )
    p.add_argument("--port", type=int, default=1503, help="pedserver's port (standard mode)")
    leaf(ped, "disconnect", "hsm.ped.disconnect", "drop the Remote PED link")
    leaf(ped, "show", "hsm.ped.show", "local or remote PED, address, connected")
    timeout = level(ped, "timeout", "PED timeouts")
    leaf(timeout, "show", "hsm.ped.timeout.show", "show the PED timeouts")
    p = leaf(timeout, "set", "hsm.ped.timeout.set", "set a PED timeout (0 = default)")
    p.add_argument("--type", required=True, choices=["rped", "pedk", "pedo"])
    p.add_argument("--seconds", type=int, required=True)

    # partition
    part = level(groups, "partition", "partitions")
    for name, command, help_text, force in (
        ("create", "partition.create", "create a partition (HSM SO)", False),
        ("init", "partition.init", "initialise a partition (partition SO and domain keys)", True),
        ("show", "partition.show", "show a partition", False),
        ("delete", "partition.delete", "delete a partition (HSM SO)", True),
        ("showpolicies", "partition.showpolicies", "show a partition's policies", False),
        (
            "changepolicy",
            "partition.changepolicy",
            "change a partition policy (partition SO)",
            False,
        ),
        (
            "resetpw",
            "partition.resetpw",
            "partition SO: reset a locked Crypto Officer (policy 15), as role resetpw -name co",
            False,
        ),
    ):
        p = leaf(part, name, command, help_text)
        # create and delete always name their partition; the others may use the current one
        p.add_argument("--name", "--partition", dest="name", required=command not in CURRENT,
                       help=None if command not in CURRENT else _CURRENT_HELP)
        if force:
            p.add_argument("--force", action="store_true")
        if name == "changepolicy":
            p.add_argument("--policy", type=int, required=True)
            p.add_argument("--value", type=int, required=True)
        if name == "resetpw":
            _add_challenge(p)
    p = leaf(part, "select", LOCAL_SELECT,
             "choose the current partition for this user (as LunaCM's slot set)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", "--partition", dest="name", help="the partition to use")
    which.add_argument("--none", action="store_true", help="forget the current partition")

    # role
    role = level(groups, "role", "partition roles (so, co, cu)")
    for name, command, help_text, chal in (
        ("init", "role.init", "initialise the CO (black key) or CU (gray key)", True),
        ("login", "role.login", "log in as partition SO, CO or CU", True),
        ("resetpw", "role.resetpw", "partition SO: reset a locked CO (policy 15)", True),
        ("activate", "role.activate", "cache the CO/CU PED secret (policy 22)", False),
        ("deactivate", "role.deactivate", "drop the cached CO/CU PED secret", False),
    ):
        p = leaf(role, name, command, help_text)
        p.add_argument("--partition", help=_CURRENT_HELP)
        p.add_argument("--name", required=True, choices=["so", "co", "cu"])
        if chal:
            _add_challenge(p)
    p = leaf(role, "logout", "role.logout", "log partition roles out")
    p.add_argument("--partition")

    # object (enough to see that access and zeroization are real)
    obj = level(groups, "object", "objects in a partition (CO or CU)")
    p = leaf(obj, "create", "object.create", "store an encrypted object")
    p.add_argument("--partition", help=_CURRENT_HELP)
    p.add_argument("--label", required=True)
    p.add_argument(
        "--value-file",
        dest="value_file",
        metavar="FILE",
        help="the object's value (default: 32 random bytes)",
    )
    p = leaf(obj, "list", "object.list", "list (decrypt) the partition's objects")
    p.add_argument("--partition", help=_CURRENT_HELP)

    # audit
    audit = level(groups, "audit", "the auditor (white key) and the audit log")
    p = leaf(audit, "init", "audit.init", "initialise the auditor (imprints the white key)")
    p.add_argument("--force", action="store_true")
    leaf(audit, "login", "audit.login", "log in as auditor")
    leaf(audit, "logout", "audit.logout", "log the auditor out")
    log = level(audit, "log", "the audit log")
    p = leaf(log, "show", "audit.log.show", "show the audit log (auditor)")
    p.add_argument("--tail", type=int)
    leaf(log, "verify", "audit.log.verify", "verify the audit log's hash chain")
    return parser


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
    ):
        if value:
            argv += [flag, value]
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

    # Started in the background: the log file in the home, reopened at SIGHUP (rotation),
    # with stdout and stderr; in the foreground: stderr (systemd's journal).
    background = READY_FD_ENV in os.environ
    setup_logging("pedhsm", level=ns.log_level, log_format=ns.log_format,
                  log_file=home / LOG_NAME if background else None, capture_std=background)
    warning = pedclient_warning(ns.pedclient)
    if warning:
        logging.getLogger("pedhsm").warning("%s", warning)
    pidfile = PidFile(home / PID_NAME)

    async def main() -> None:
        daemon = Daemon(home, serial=ns.serial, local_ped=ns.local_ped, pedclient=ns.pedclient)
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
