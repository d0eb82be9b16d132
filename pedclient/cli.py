"""``pedclient``: the HSM host's relay daemon, command line.

    pedclient mode start [--home DIR] [--config FILE] [--foreground] [--idle-timeout S]
                         [--socket-read-rsp-timeout S] [--socket PATH] [--log-level L]
                         [--peer-listen [--port 9697] [--peer-ip ADDR]]
    pedclient mode stop | show [--json] | config (--show | --create | --set KEY VALUE)
    pedclient peer register --name N --certificate FILE | delete --name N | list
    pedclient certificate regen | show | export FILE

Called with no mode it says "You must specify a mode." and lists them.  Luna spellings
work (``pedclient -mode start``).  HSMs on this host reach it on a Unix socket in its
home (``HOME/pedclient.sock``, owner-only).  Command line beats the config file beats
defaults.  Exit codes: 0 ok, 1 error, 2 usage, 3 (show) not running.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ped.cliutil import normalize_luna_argv
from ped.daemon.cli import (
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    config_command,
    no_mode_message,
    single_error,
    stop_command,
)
from ped.daemon.config import ConfigError, load_config
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.home import HomeError, resolve_home
from ped.daemon.logs import setup_logging
from ped.daemon.process import (
    READY_FD_ENV,
    DaemonStartError,
    PidFile,
    notify_failed,
    notify_ready,
    start_background,
)
from ped.daemon.signals import watch_stop_signals
from ped.errors import PedError
from ped.tls import PinStore, TlsError, ensure_identity
from pedclient.client import ClientStartError, PedClient
from pedclient.peer import PeerPool, peer_dialer, serve_peers
from pedclient.settings import SCHEMA, Layout, Settings
from pedserver.tlscli import (
    add_certificate_parser,
    add_registry_parser,
    certificate_command,
    common_name,
    peer_link_lines,
    registry_command,
)

PROG = "pedclient"
MODES = ("start", "stop", "show", "config")
COMMAND_WORDS = ("mode", "peer")
OVERRIDES = {
    "idle_timeout": "idle_timeout",
    "socket_read_rsp_timeout": "socket_read_rsp_timeout",
    "socket": "socket",
    "log_level": "log_level",
    "peer_listen": "peer_listen",
    "port": "peer_port",
    "peer_ip": "peer_ip",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", metavar="DIR",
                   help="pedclient's home (default: $PEDCLIENT_HOME or a per-user directory)")
    p.add_argument("--config", "--configfile", metavar="FILE",
                   help="config file (default: HOME/config.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Relay between HSMs on this host and a Remote PED's pedserver.",
        epilog="Luna spellings are accepted: pedclient -mode start",
    )
    commands = parser.add_subparsers(dest="command", metavar="mode")
    mode = commands.add_parser("mode", help="start, stop, show or configure pedclient")
    modes = mode.add_subparsers(dest="mode", metavar="{" + ",".join(MODES) + "}")

    start = modes.add_parser("start", help="start relaying for HSMs on this host")
    _common(start)
    start.add_argument("--idle-timeout", "--idletimeout", dest="idle_timeout", type=int,
                       metavar="S", help="link idle timeout in seconds (default 1800)")
    start.add_argument("--socket-read-rsp-timeout", "--socketreadrsptimeout",
                       dest="socket_read_rsp_timeout", type=int, metavar="S",
                       help="seconds without hearing from pedserver before a link is "
                       "declared lost (default 120)")
    start.add_argument("--socket", metavar="PATH",
                       help="local endpoint for HSMs (default HOME/pedclient.sock)")
    start.add_argument("--log-level", "--loglevel", dest="log_level",
                       choices=["debug", "info", "warning", "error"])
    start.add_argument("--foreground", "-f", action="store_true",
                       help="stay in the foreground, logging to stderr")
    start.add_argument("--peer-listen", "--peerlisten", dest="peer_listen",
                       action="store_true", default=None,
                       help="peer-to-peer mode: also accept registered pedservers dialling "
                       "in over pinned mutual TLS (for hosts that may not dial out)")
    start.add_argument("--port", type=int,
                       help="TCP port for --peer-listen (default 9697)")
    start.add_argument("--peer-ip", "--peerip", dest="peer_ip", metavar="ADDR",
                       help="address for --peer-listen (default 0.0.0.0: every interface)")

    stop = modes.add_parser("stop", help="stop pedclient (open links get a reason)")
    _common(stop)
    show = modes.add_parser("show", help="show pedclient and its links")
    _common(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")

    add_registry_parser(commands, PROG, _common)
    add_certificate_parser(commands, PROG, _common)

    config = modes.add_parser("config", help="show, recreate or change the config file")
    _common(config)
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--show", action="store_true", help="print the settings in effect")
    what.add_argument("--create", action="store_true",
                      help="write the default config (the old one is kept as .bak)")
    what.add_argument("--set", nargs=2, metavar=("KEY", "VALUE"), help="change one setting")
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the pedclient command line; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    raw = list(sys.argv[1:] if argv is None else argv)
    args_list = normalize_luna_argv(raw, COMMAND_WORDS)
    if not args_list or args_list == ["mode"]:
        err.write(no_mode_message(PROG, MODES) + "\n")
        return EXIT_USAGE
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.command in ("peer", "certificate"):
        try:
            home = resolve_home(args.home, PROG)
        except HomeError as exc:
            err.write(f"{PROG}: {exc}\n")
            return EXIT_ERROR
        command = registry_command if args.command == "peer" else certificate_command
        return command(PROG, home, args, out, err)
    if args.command != "mode" or args.mode is None:
        err.write(no_mode_message(PROG, MODES) + "\n")
        return EXIT_USAGE
    try:
        home = resolve_home(args.home, PROG)
    except HomeError as exc:
        err.write(f"{PROG}: {exc}\n")
        return EXIT_ERROR
    config_path = Path(args.config).expanduser() if args.config else home / "config.toml"
    if args.mode == "config":
        return config_command(schema=SCHEMA, path=config_path, show=args.show,
                              create=args.create, set_pair=args.set, out=out, err=err,
                              prog=PROG)
    layout = Layout(home)
    if args.mode == "stop":
        return stop_command(control=layout.control, pid_path=layout.pid, prog=PROG,
                            out=out, err=err)
    if args.mode == "show":
        return _show(layout, as_json=args.json, out=out, err=err)
    return _start(args, home, config_path, out, err)


def _start(args: argparse.Namespace, home: Path, config_path: Path, out: TextIO,
           err: TextIO) -> int:
    try:
        values = SCHEMA.merge(
            load_config(config_path, SCHEMA),
            {key: getattr(args, dest) for dest, key in OVERRIDES.items()},
        )
    except ConfigError as exc:
        notify_failed(str(exc))
        err.write(f"{PROG}: {exc}\n")
        return EXIT_ERROR
    settings = Settings.from_mapping(values)
    layout = Layout(home, settings.socket)
    running = PidFile(layout.pid).running_pid()
    if running is not None:
        message = f"pedclient is already running (pid {running}, home {layout.home})"
        notify_failed(message)
        err.write(f"{PROG}: {message}\n")
        return EXIT_ERROR
    if args.foreground:
        return run_foreground(settings, layout, err=err)
    child = [sys.executable, "-P", "-m", "pedclient", "mode", "start", "--foreground",
             "--home", str(home), "--config", str(config_path)]
    for dest in OVERRIDES:
        value = getattr(args, dest)
        if value is True:
            child.append(f"--{dest.replace('_', '-')}")
        elif value is not None:
            child += [f"--{dest.replace('_', '-')}", str(value)]
    try:
        proc = start_background(child, log_path=layout.log, name=PROG)
    except DaemonStartError as exc:
        err.write(f"{PROG}: could not start: {exc}\n")
        return EXIT_ERROR
    out.write(f"pedclient started (pid {proc.pid}); HSMs on this host connect through "
              f"{layout.endpoint}\n  home: {layout.home}  log: {layout.log}\n")
    if settings.peer_listen:
        try:
            info = control_request_sync(layout.control, "show", timeout=5.0, what=PROG)
        except ControlError:
            info = {}
        out.write(f"  peer-to-peer: listening for registered pedservers on "
                  f"{info.get('peer_listen') or f'{settings.peer_ip}:{settings.peer_port}'}\n")
    return EXIT_OK


def run_foreground(settings: Settings, layout: Layout, *, err: TextIO | None = None) -> int:
    """Serve until SIGTERM/SIGINT/``mode stop``; returns the exit code."""
    err = err or sys.stderr
    background = READY_FD_ENV in os.environ
    setup_logging(PROG, log_file=layout.log if background else None, level=settings.log_level)
    pidfile = PidFile(layout.pid)
    try:
        pidfile.write()
    except DaemonStartError as exc:
        notify_failed(str(exc))
        err.write(f"{PROG}: {exc}\n")
        return EXIT_ERROR
    pool = PeerPool(PinStore(layout.home, program="pedclient"))
    client = PedClient(settings, endpoint_path=layout.endpoint, control_path=layout.control,
                       dialer=peer_dialer(pool if settings.peer_listen else None))
    try:
        trio.run(_serve, client, pool, layout.home)
    except BaseException as exc:
        error = single_error(exc)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_OK
        if isinstance(error, ClientStartError | PedError):
            notify_failed(str(error))
            err.write(f"{PROG}: {error}\n")
            return EXIT_ERROR
        raise
    finally:
        pidfile.remove()
    return EXIT_OK


async def _serve(client: PedClient, pool: PeerPool, home: Path) -> None:
    s = client.settings
    listening: list[str] = []
    client.show_extras.append(
        lambda: {"peer_listen": ", ".join(listening), "peer_links": pool.show()}
    )
    try:
        identity = ensure_identity(home, common_name())  # made on first start
    except TlsError as exc:
        if s.peer_listen:
            raise ClientStartError(str(exc)) from None
        logging.getLogger(PROG).warning("no usable peer-to-peer identity: %s", exc)
    async with trio.open_nursery() as nursery:
        if s.peer_listen:
            try:
                listeners = await nursery.start(
                    functools.partial(serve_peers, pool, identity, port=s.peer_port,
                                      host=s.peer_ip))
            except OSError as exc:
                raise ClientStartError(
                    f"cannot listen for pedservers on {s.peer_ip}:{s.peer_port}: "
                    f"{exc.strerror or exc}; pick another --port") from None
            except TlsError as exc:
                raise ClientStartError(str(exc)) from None
            for listener in listeners:
                host, port = listener.socket.getsockname()[:2]
                listening.append(f"{host}:{port}")
            logging.getLogger(PROG).info(
                "peer-to-peer: listening for registered pedservers on %s (certificate %s)",
                ", ".join(listening), identity.fingerprint)

        def on_signal(signum: int) -> None:
            client.request_stop(f"signal {signal.Signals(signum).name}")

        await nursery.start(watch_stop_signals, on_signal)

        async def run(task_status: trio.TaskStatus[Path]) -> None:
            await client.serve(task_status=task_status)
            nursery.cancel_scope.cancel()

        path = await nursery.start(run)
        notify_ready(str(path))


def _show(layout: Layout, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    try:
        info = control_request_sync(layout.control, "show", timeout=10.0, what=PROG)
    except ControlUnavailable:
        if as_json:
            out.write(json.dumps({"running": False, "home": str(layout.home)}) + "\n")
        else:
            out.write(f"pedclient is not running (home {layout.home}).\n")
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        err.write(f"{PROG}: {exc}\n")
        return EXIT_ERROR
    if as_json:
        out.write(json.dumps({"running": True, "home": str(layout.home), **info}) + "\n")
        return EXIT_OK
    now = time.time()
    lines = [
        f"pedclient is running (pid {info.get('pid')}, home {layout.home})",
        f"  Hostname:                 {info.get('hostname')}",
        f"  Local endpoint for HSMs:  {info.get('socket')}",
        f"  Idle timeout:             {info.get('idle_timeout')} s",
        f"  Socket read-rsp timeout:  {info.get('socket_read_rsp_timeout')} s",
        f"  Links open:               {len(info.get('links', []))}",
    ]
    for link in info.get("links", []):
        up = max(0, int(now - float(link.get("since", now))))
        lines.append(_link_line(link, up))
    lines += peer_link_lines(info, PROG)
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


def _link_line(link: dict[str, Any], up: int) -> str:
    return (f"    link {link['id']}: HSM {link.get('hsm') or 'unnamed'} -> {link['target']} "
            f"({link.get('server') or '?'}), up {up} s, {link['doing']}, "
            f"{link['operations']} operation(s), idle timeout {link['idle_timeout']} s")
