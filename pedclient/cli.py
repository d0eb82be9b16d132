"""``pedclient``: the HSM host's relay daemon, command line.

    pedclient mode start [--home DIR] [--config FILE] [--foreground] [--idle-timeout S]
                         [--socket-read-rsp-timeout S] [--socket PATH] [--log-level L]
                         [--log-format text|json]
                         [--peer-listen [--port 9697] [--peer-ip ADDR]]
    pedclient mode stop | show [--json] | config (--show | --create | --set KEY VALUE)
    pedclient mode assignid | setid --id N --ip A [--port P] | getid [--id N | --ip A]
                   | releaseid --id N | deleteid --id N | testid --id N
    pedclient peer register --name N --certificate FILE | delete --name N | list
    pedclient certificate regen | show | export FILE

Called with no mode it says "You must specify a mode." and lists them.  Luna spellings
work (``pedclient -mode start``, ``pedclient -mode assignid -id 1 -ip A -port 1503``).
The PED id map (`pedclient.ids`) names pedservers by number for ``hsm ped connect
--id``.  HSMs on this host reach it on a Unix socket in its home
(``HOME/pedclient.sock``, owner-only).  Command line beats the config file beats defaults.
Exit codes: 0 ok, 1 error, 2 usage (a bad command line), 3 (show) not running.
``--version`` prints the version.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ped.daemon import arguments, exits, startup
from ped.daemon.cli import daemon_main
from ped.daemon.config import ConfigError, load_config
from ped.daemon.control import ControlError, control_request_sync
from ped.daemon.process import notify_ready
from ped.errors import PedError
from ped.tls import PinStore, TlsError, ensure_identity
from ped.tls.cli import (
    add_certificate_parser,
    add_registry_parser,
    certificate_command,
    common_name,
    peer_link_lines,
    registry_command,
)
from ped.tls.pins import Program
from pedclient.client import ClientStartError, PedClient
from pedclient.idcommands import (
    ID_MODES,
    LOOKUP_COMMAND,
    add_id_parsers,
    describe_ids,
    id_command,
    lookup_command,
    show_ids,
)
from pedclient.ids import PedIdStore
from pedclient.peer import PeerPool, peer_dialer, serve_peers
from pedclient.settings import SCHEMA, Layout, Settings

PROG: Program = "pedclient"
MODES = ("start", "stop", "show", "config", *ID_MODES)
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
_common = arguments.home_options(PROG)


def build_parser() -> argparse.ArgumentParser:
    parser, commands, modes = arguments.mode_parser(
        PROG,
        description="Relay between HSMs on this host and a Remote PED's pedserver.",
        epilog="Luna spellings are accepted: pedclient -mode start",
        modes=MODES,
    )

    start = modes.add_parser("start", help="start relaying for HSMs on this host")
    arguments.add_home_options(start, PROG)
    arguments.add_idle_timeout_option(start)
    arguments.add_socket_read_rsp_timeout_option(
        start,
        "seconds without hearing from pedserver before a link is "
        "declared lost (default 120)",
    )
    start.add_argument("--socket", metavar="PATH",
                       help="local endpoint for HSMs (default HOME/pedclient.sock)")
    arguments.add_log_level_option(start)
    arguments.add_log_format_option(start)
    arguments.add_foreground_option(start)
    start.add_argument("--peer-listen", "--peerlisten", dest="peer_listen",
                       action="store_true", default=None,
                       help="peer-to-peer mode: also accept registered pedservers dialling "
                       "in over pinned mutual TLS (for hosts that may not dial out)")
    start.add_argument("--port", type=int,
                       help="TCP port for --peer-listen (default 9697)")
    start.add_argument("--peer-ip", "--peerip", dest="peer_ip", metavar="ADDR",
                       help="address for --peer-listen (default 0.0.0.0: every interface)")

    arguments.add_stop_show_parsers(modes, PROG,
                                 stop_help="stop pedclient (open links get a reason)",
                                 show_help="show pedclient and its links")
    add_registry_parser(commands, PROG, _common)
    add_certificate_parser(commands, PROG, _common)
    arguments.add_config_parser(modes, PROG)
    add_id_parsers(modes)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the pedclient command line; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    return daemon_main(
        argv, prog=PROG, modes=MODES, command_words=COMMAND_WORDS, parser=build_parser(),
        home_commands={"peer": registry_command, "certificate": certificate_command},
        schema=SCHEMA, layout=Layout, describe=_describe,
        other_mode=lambda args, layout, config_path: (
            id_command(args, layout, config_path, out, err) if args.mode in ID_MODES
            else _start(args, layout.home, config_path, out, err)),
        out=out, err=err,
    )


def _start(args: argparse.Namespace, home: Path, config_path: Path, out: TextIO,
           err: TextIO) -> int:
    cli = arguments.cli_overrides(args, OVERRIDES)
    problem = arguments.command_line_problem(SCHEMA, cli)
    if problem is not None:
        startup.start_failed(PROG, problem, err)
        return exits.EXIT_USAGE
    try:
        values = SCHEMA.merge(load_config(config_path, SCHEMA), cli)
    except ConfigError as exc:
        startup.start_failed(PROG, str(exc), err)
        return exits.EXIT_ERROR
    settings = Settings.from_mapping(values)
    layout = Layout(home, settings.socket)

    def started(pid: int) -> None:
        out.write(f"pedclient started (pid {pid}); HSMs on this host connect through "
                  f"{layout.endpoint}\n  home: {layout.home}  log: {layout.log}\n")
        if settings.peer_listen:
            try:
                info = control_request_sync(layout.control, "show", timeout=5.0, what=PROG)
            except ControlError:
                info = {}
            out.write(f"  peer-to-peer: listening for registered pedservers on "
                      f"{info.get('peer_listen') or f'{settings.peer_ip}:{settings.peer_port}'}"
                      "\n")

    return startup.start_command(
        prog=PROG, layout=layout, config_path=config_path, args=args,
        dests=[*OVERRIDES, "log_format"],
        foreground=lambda: run_foreground(settings, layout, log_format=args.log_format,
                                          err=err),
        started=started, err=err,
    )


def run_foreground(
    settings: Settings, layout: Layout, *, log_format: str = "text", err: TextIO | None = None
) -> int:
    """Serve until SIGTERM/SIGINT/``mode stop``; returns the exit code."""
    err = err or sys.stderr
    pidfile = startup.begin_foreground(PROG, pid_path=layout.pid, log_path=layout.log,
                                      log_level=settings.log_level, log_format=log_format,
                                      err=err)
    if pidfile is None:
        return exits.EXIT_ERROR
    try:
        pool = PeerPool(PinStore(layout.home, program="pedclient"))
        client = PedClient(settings, endpoint_path=layout.endpoint, control_path=layout.control,
                           dialer=peer_dialer(pool if settings.peer_listen else None))
        return startup.run_until_stopped(PROG, _serve, client, pool, layout.home,
                                        start_errors=(ClientStartError, PedError), err=err)
    finally:
        pidfile.remove()


async def _serve(client: PedClient, pool: PeerPool, home: Path) -> None:
    s = client.settings
    listening: list[str] = []
    client.show_extras.append(
        lambda: {"peer_listen": ", ".join(listening), "peer_links": pool.show()}
    )
    ids = PedIdStore(home)  # read at each lookup: `mode assignid` needs no restart
    client.extra_commands[LOOKUP_COMMAND] = lookup_command(ids)
    client.show_extras.append(lambda: show_ids(ids))
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
        path = await startup.start_service(nursery, client)
        notify_ready(str(path))


def _describe(info: dict[str, Any]) -> list[str]:
    now = time.time()
    lines = [
        f"  Hostname:                 {info.get('hostname')}",
        f"  Local endpoint for HSMs:  {info.get('socket')}",
        f"  Idle timeout:             {info.get('idle_timeout')} s",
        f"  Socket read-rsp timeout:  {info.get('socket_read_rsp_timeout')} s",
        f"  Links open:               {len(info.get('links', []))}",
    ]
    for link in info.get("links", []):
        up = max(0, int(now - float(link.get("since", now))))
        lines.append(_link_line(link, up))
    lines += describe_ids(info.get("ped_ids", []))
    if info.get("ped_ids_problem"):
        lines.append(f"    ({info['ped_ids_problem']})")
    return lines + peer_link_lines(info, PROG)


def _link_line(link: dict[str, Any], up: int) -> str:
    return (f"    link {link['id']}: HSM {link.get('hsm') or 'unnamed'} -> {link['target']} "
            f"({link.get('server') or '?'}), up {up} s, {link['doing']}, "
            f"{link['operations']} operation(s), idle timeout {link['idle_timeout']} s")
