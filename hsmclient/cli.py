"""``hsmclient``: the client host's daemon and command line (PKCS#11 applications to HSMs).

    hsmclient mode start [--home DIR] [--config FILE] [--foreground] [--socket PATH]
                         [--slot-query-timeout S] [--log-level L] [--log-format text|json]
    hsmclient mode stop | show [--json] | config (--show | --create | --set KEY VALUE)
    hsmclient certificate regen | show | export FILE
    hsmclient server register --name N --certificate FILE --ip A [--port 1792]
    hsmclient server list | delete --name N
    hsmclient slot list [--json]
    hsmclient verify [--json]
    hsmclient partition clone ... | hagroup ACTION ... (see hsmclient.commands_ha)
    hsmclient vtl addServer -n IP -c FILE | listServers | deleteServer -n IP | verify

Called with no mode it says "You must specify a mode." and lists them.  Luna spellings
work (``hsmclient -mode start``, ``hsmclient vtl addServer -n IP -c FILE``).  The home is
``--home``, else ``$HSMCLIENT_HOME``, else a per-user directory (as for pedclient).
Applications reach the daemon through p11-kit's client module on a Unix socket
(``HOME/pkcs11.sock``, owner-only; see `hsmclient.settings`).  Command line beats the
config file beats defaults.  Exit codes: 0 ok, 1 error, 2 usage, 3 not running
(``mode show``, ``slot list``).  ``--version`` prints the version.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from hsmclient.commands import (
    add_certificate_parser,
    add_server_parser,
    add_vtl_parser,
    certificate_command,
    server_command,
)
from hsmclient.commands_archive import add_archive_parser, partition_command
from hsmclient.commands_clone import add_partition_parser
from hsmclient.commands_ha import add_hagroup_parser, hagroup_command
from hsmclient.commands_slots import (
    add_slot_parsers,
    describe_servers,
    format_slots,
    slot_list_command,
    verify_command,
)
from hsmclient.daemon import HsmClient, HsmClientStartError, SlotLine, load_backend
from hsmclient.settings import SCHEMA, Layout, Settings, server_address
from hsmclient.slots import SlotMap, SlotMapError
from ped.daemon import arguments, exits, startup
from ped.daemon.cli import daemon_main
from ped.daemon.config import ConfigError, load_config
from ped.daemon.process import notify_ready
from ped.errors import PedError
from ped.tls import PinStore
from ped.tls.pins import Program

PROG: Program = "hsmclient"
MODES = ("start", "stop", "show", "config")
COMMAND_WORDS = ("mode", "certificate", "server", "slot", "verify", "vtl", "partition",
                 "hagroup")
OVERRIDES = {
    "socket": "socket",
    "slot_query_timeout": "slot_query_timeout",
    "log_level": "log_level",
}
_common = arguments.home_options(PROG)


def build_parser() -> argparse.ArgumentParser:
    parser, commands, modes = arguments.mode_parser(
        PROG,
        description="Serve PKCS#11 applications on this host with the partitions of "
        "registered HSMs (pedhsm, port 1792).",
        epilog="Luna spellings are accepted: hsmclient -mode start; hsmclient vtl "
        "addServer -n IP -c FILE",
        modes=MODES,
    )
    start = modes.add_parser("start", help="start serving PKCS#11 applications")
    arguments.add_home_options(start, PROG)
    start.add_argument("--socket", metavar="PATH",
                       help="the applications' p11-kit socket (default HOME/pkcs11.sock)")
    start.add_argument("--slot-query-timeout", "--slotquerytimeout", dest="slot_query_timeout",
                       type=int, metavar="S",
                       help="seconds `mode show`, `slot list` and `verify` wait for the "
                       "servers (default 10)")
    arguments.add_log_level_option(start)
    arguments.add_log_format_option(start)
    arguments.add_foreground_option(start)
    arguments.add_stop_show_parsers(modes, PROG, stop_help="stop hsmclient",
                                    show_help="show hsmclient, its servers and slots")
    arguments.add_config_parser(modes, PROG)
    add_certificate_parser(commands, _common)
    add_server_parser(commands, _common)
    add_slot_parsers(commands, _common)
    add_archive_parser(add_partition_parser(commands, _common), _common)
    add_hagroup_parser(commands, _common)
    add_vtl_parser(commands, _common)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the hsmclient command line; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    return daemon_main(
        luna_options(sys.argv[1:] if argv is None else argv),
        prog=PROG, modes=MODES, command_words=COMMAND_WORDS, parser=build_parser(),
        home_commands={"certificate": certificate_command, "server": server_command,
                       "slot": slot_list_command, "verify": verify_command,
                       "vtl": server_command, "partition": partition_command,
                       "hagroup": hagroup_command},
        schema=SCHEMA, layout=Layout, describe=describe,
        other_mode=lambda args, layout, config_path: _start(args, layout.home, config_path,
                                                            out, err),
        out=out, err=err,
    )


#: Commands where LunaCM's ``-slot S`` / ``-partition P`` are options, not the ``slot``
#: command word (or a word ``partition``) the Luna spellings would make of them.
_LUNA_OPTION_COMMANDS = ("hagroup", "partition")
_LUNA_OPTIONS = {"-slot": "--slot", "-partition": "--partition"}


def luna_options(argv: Sequence[str]) -> list[str]:
    """LunaCM's ``hagroup addMember -group L -slot S`` and ``partition archive backup -slot
    S -partition P``: ``-slot``/``-partition`` become options after ``hagroup`` and
    ``partition``; elsewhere ``-slot`` stays the command word (``hsmclient -slot list``)."""
    words = list(argv)
    first = next((w.lstrip("-").lower() for w in words if not w.startswith("--")), "")
    if first not in _LUNA_OPTION_COMMANDS:
        return words
    return [w if i == 0 else _LUNA_OPTIONS.get(w.lower(), w) for i, w in enumerate(words)]


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
        out.write(f"hsmclient started (pid {pid}); PKCS#11 applications load p11-kit-client.so"
                  f" with:\n  {_address(layout)}\n  home: {layout.home}  log: {layout.log}\n")

    return startup.start_command(
        prog=PROG, layout=layout, config_path=config_path, args=args,
        dests=[*OVERRIDES, "log_format"],
        foreground=lambda: run_foreground(settings, layout, log_format=args.log_format,
                                          err=err),
        started=started, err=err,
    )


def _address(layout: Layout) -> str:
    return server_address(layout.endpoint)


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
        return startup.run_until_stopped(PROG, _serve, settings, layout,
                                        start_errors=(HsmClientStartError, PedError), err=err)
    finally:
        pidfile.remove()


async def _serve(settings: Settings, layout: Layout) -> None:
    pins = PinStore(layout.home, program=PROG)
    try:
        backend = load_backend(layout.home, pins, SlotMap(layout.home))
    except SlotMapError as exc:
        raise HsmClientStartError(str(exc)) from None
    daemon = HsmClient(settings, home=layout.home, endpoint_path=layout.endpoint,
                       backend=backend, control_path=layout.control)
    async with trio.open_nursery() as nursery:
        path = await startup.start_service(nursery, daemon)
        notify_ready(str(path))


def describe(info: dict[str, Any]) -> list[str]:
    """``mode show``'s lines after the first."""
    lines = [
        f"  Hostname:                 {info.get('hostname')}",
        f"  Socket for applications:  {info.get('socket')}",
        "  Applications load p11-kit-client.so with:",
        f"    {info.get('p11kit_address')}",
        f"  Servers registered:       {len(info.get('servers') or [])}",
    ]
    if info.get("servers"):
        lines += ["    " + line
                  for line in describe_servers(info, with_slots=False).splitlines()]
    else:
        lines.append(f"    add one with: {PROG} server register --name NAME --certificate "
                     "FILE --ip ADDRESS")
    if info.get("slots") is None:
        lines.append(f"  Slots: unknown ({info.get('error')})")
    elif info["slots"]:
        lines.append(f"  Slots: {sum(row['slot_id'] is not None for row in info['slots'])}")
        table = format_slots([SlotLine(**row) for row in info["slots"]])
        lines += ["    " + line for line in table.splitlines()]
    else:
        lines.append("  Slots: none")
    return lines
