"""``pedserver``: the workstation daemon's command line.

    pedserver mode start [--ip ADDR] [--port 1503] [--device URI] [--home DIR]
                         [--config FILE] [--foreground] [--idle-timeout S]
                         [--socket-read-rsp-timeout S] [--log-level L] [--log-format text|json]
    pedserver mode stop | show [--json] | config (--show | --create | --set KEY VALUE...)
    pedserver mode connect --name N | disconnect --name N       (peer-to-peer links)
    pedserver appliance register --name N --certificate FILE --ip A [--port 9697]
    pedserver appliance delete --name N | list (Luna: show)
    pedserver certificate regen | show | export FILE

Luna spellings work too (``pedserver -mode start -port 1503 -socketreadrsptimeout 300``,
``pedserver -mode config -set -idletimeout 900``, ``-mode config -reset``,
``pedserver -appliance register -name N -certificate F -ip A``, ``-appliance show``).
With no ``--device``, pedserver serves the config's ``device``, else the USB PED.
Settings: command line beats the config file (``--config`` or HOME/config.toml) beats
built-in defaults.  HOME is ``--home``, else ``PEDSERVER_HOME``, else a per-user state
directory.  Exit codes: 0 ok, 1 error, 2 usage (a bad command line), 3 (show) not running.
``--version`` prints the version.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ped.daemon import arguments, exits, startup
from ped.daemon.cli import daemon_main
from ped.daemon.config import ConfigError, load_config
from ped.daemon.control import ControlError, control_request_sync
from ped.daemon.process import notify_ready
from ped.device import PedDriver, open_driver
from ped.device.uri import parse_emulated
from ped.errors import PedError
from ped.tls.cli import (
    add_certificate_parser,
    add_registry_parser,
    certificate_command,
    connect_command,
    peer_link_lines,
    registry_command,
)
from ped.tls.pins import Program
from pedserver.peer import PeerManager
from pedserver.pool import PedPool
from pedserver.server import PedServer, ServerStartError
from pedserver.settings import SCHEMA, Layout, Settings

PROG: Program = "pedserver"
MODES = ("start", "stop", "show", "config", "connect", "disconnect")
COMMAND_WORDS = ("mode", "appliance")
#: option dest -> config key, for the options that override the config file.
OVERRIDES = {
    "ip": "ip",
    "port": "port",
    "device": "device",
    "idle_timeout": "idle_timeout",
    "socket_read_rsp_timeout": "socket_read_rsp_timeout",
    "log_level": "log_level",
}

DriverFactory = Callable[[str], PedDriver]
_common = arguments.home_options(PROG)


def build_parser() -> argparse.ArgumentParser:
    parser, commands, modes = arguments.mode_parser(
        PROG,
        description="Serve a PED device to HSMs over the network (Remote PED).",
        epilog="Luna spellings are accepted: pedserver -mode start -port 1503",
        modes=MODES,
    )

    start = modes.add_parser("start", help="start serving the PED")
    arguments.add_home_options(start, PROG)
    start.add_argument("--ip", help="address to listen on (default 0.0.0.0: every interface)")
    start.add_argument("--port", type=int, help="TCP port (default 1503)")
    start.add_argument("--device", metavar="URI", action="append",
                       help="PED device: usb, usb:VID:PID[:SERIAL], socket:PATH, "
                       "emulated:DIR[?operator=auto]; give it again for a pool of PEDs "
                       "(each link gets the least busy one). Default: the config's "
                       "device, else usb (a PED not plugged in yet is waited for)")
    arguments.add_idle_timeout_option(start)
    arguments.add_socket_read_rsp_timeout_option(
        start,
        "seconds without hearing from a link before it is dropped "
        "(default 120)",
    )
    arguments.add_log_level_option(start)
    arguments.add_log_format_option(start)
    arguments.add_foreground_option(start)

    arguments.add_stop_show_parsers(modes, PROG,
                                 stop_help="stop the running pedserver (links get a reason)",
                                 show_help="show pedserver, its PED and its links")
    for verb, text in (("connect", "keep a peer-to-peer link to a registered appliance "
                        "(pedserver dials it; reconnects when it drops)"),
                       ("disconnect", "end the peer-to-peer link to an appliance")):
        p2p = modes.add_parser(verb, help=text)
        arguments.add_home_options(p2p, PROG)
        p2p.add_argument("--name", required=True,
                         help="the appliance's name (see pedserver appliance list)")
    add_registry_parser(commands, PROG, _common)
    add_certificate_parser(commands, PROG, _common)
    arguments.add_config_parser(modes, PROG)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    driver_factory: DriverFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the pedserver command line; returns the exit code.

    *driver_factory* replaces ``ped.device.open_driver`` (for integrators' tests only;
    it applies to ``--foreground`` runs in this process).
    """
    out = out or sys.stdout
    err = err or sys.stderr

    def other_mode(args: argparse.Namespace, layout: Layout, config_path: Path) -> int:
        if args.mode in ("connect", "disconnect"):
            return connect_command(layout.control, args.mode, args.name, out, err)
        return _start(args, layout, config_path, driver_factory, out, err)

    return daemon_main(
        argv, prog=PROG, modes=MODES, command_words=COMMAND_WORDS, parser=build_parser(),
        home_commands={"appliance": registry_command, "certificate": certificate_command},
        schema=SCHEMA, layout=Layout, describe=_describe, other_mode=other_mode,
        out=out, err=err,
    )


# ----------------------------------------------------------------------------- start


def _command_line(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None where not given)."""
    cli = arguments.cli_overrides(args, OVERRIDES)
    if isinstance(cli.get("device"), list):  # --device repeated: a pool, one URI a line
        cli["device"] = "\n".join(cli["device"])
    return cli


def _settings(args: argparse.Namespace, config_path: Path) -> Settings:
    values = SCHEMA.merge(load_config(config_path, SCHEMA), _command_line(args))
    return Settings.from_mapping(values)


def device_problem(uri: str) -> str | None:
    """Why the device *uri* can never work (malformed, or an emulated PED's keyring that
    does not exist), or None.  A USB PED not plugged in, or a ``socket:`` PED not started
    yet, is no problem: pedserver waits for it and ``mode show`` says so."""
    try:
        open_driver(uri)
    except (PedError, ValueError) as exc:
        return str(exc)
    if uri.startswith("emulated:"):
        keyring, _ = parse_emulated(uri)
        if not Path(keyring).expanduser().is_dir():
            return (f"{uri}: keyring directory {keyring!r} does not exist; create it with "
                    "`pedkey` or name an existing one")
    return None


def _start(
    args: argparse.Namespace,
    layout: Layout,
    config_path: Path,
    driver_factory: DriverFactory | None,
    out: TextIO,
    err: TextIO,
) -> int:
    problem = arguments.command_line_problem(SCHEMA, _command_line(args))
    if problem is not None:
        startup.start_failed(PROG, problem, err)
        return exits.EXIT_USAGE
    try:
        settings = _settings(args, config_path)
    except ConfigError as exc:
        startup.start_failed(PROG, str(exc), err)
        return exits.EXIT_ERROR
    if driver_factory is None:
        for uri in settings.devices:
            problem = device_problem(uri)
            if problem is not None:
                startup.start_failed(PROG, f"could not start: {problem}", err)
                return exits.EXIT_ERROR

    def started(pid: int) -> None:
        try:
            info = control_request_sync(layout.control, "show", timeout=5.0, what=PROG)
        except ControlError:
            info = {}
        out.write(f"pedserver started (pid {pid}), listening on "
                  f"{info.get('ip', settings.ip)}:{info.get('port', settings.port)}\n")
        if info:
            out.write(f"  PED: {_device_line(info)}\n")
        out.write(f"  home: {layout.home}  log: {layout.log}\n")

    return startup.start_command(
        prog=PROG, layout=layout, config_path=config_path, args=args,
        dests=[*OVERRIDES, "log_format"],
        foreground=lambda: run_foreground(settings, layout, driver_factory=driver_factory,
                                          log_format=args.log_format, err=err),
        started=started, err=err,
    )


def run_foreground(
    settings: Settings,
    layout: Layout,
    *,
    driver_factory: DriverFactory | None = None,
    log_format: str = "text",
    err: TextIO | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT/``mode stop``; returns the exit code (1, after saying
    why, for a device URI that can never work)."""
    err = err or sys.stderr
    pidfile = startup.begin_foreground(PROG, pid_path=layout.pid, log_path=layout.log,
                                      log_level=settings.log_level, log_format=log_format,
                                      err=err)
    if pidfile is None:
        return exits.EXIT_ERROR
    try:
        if driver_factory is None:
            driver_factory = open_driver
        try:
            uris = settings.devices
            driver = (driver_factory(uris[0]) if len(uris) == 1
                      else PedPool([driver_factory(uri) for uri in uris]))
        except (PedError, ValueError) as exc:
            startup.start_failed(PROG, str(exc), err)
            return exits.EXIT_ERROR
        server = PedServer(settings, driver, control_path=layout.control)
        return startup.run_until_stopped(PROG, _serve, server, layout.home,
                                        start_errors=(ServerStartError, PedError), err=err)
    finally:
        pidfile.remove()


async def _serve(server: PedServer, home: Path) -> None:
    peers = PeerManager(server, home)
    peers.install()
    async with trio.open_nursery() as nursery:
        await nursery.start(peers.run)
        address = await startup.start_service(nursery, server)
        notify_ready(f"{address[0]}:{address[1]}")


# ----------------------------------------------------------------------------- show


def _device_line(info: dict[str, Any]) -> str:
    if info.get("device_connected"):
        return (f"{info.get('device')} connected ({info.get('model')}, firmware "
                f"{info.get('firmware')}, serial {info.get('serial')}, "
                f"mode {info.get('device_mode')})")
    problem = info.get("device_problem") or "not connected"
    return f"{info.get('device')} NOT connected ({problem})"


def _describe(info: dict[str, Any]) -> list[str]:
    now = time.time()
    lines = [
        f"  Hostname:                 {info.get('hostname')}",
        f"  IP address:               {info.get('ip')}",
        f"  Port:                     {info.get('port')}",
        f"  Device:                   {_device_line(info)}",
        f"  PED firmware version:     {info.get('firmware') or '-'}",
        f"  Idle timeout:             {info.get('idle_timeout')} s",
        f"  Socket read-rsp timeout:  {info.get('socket_read_rsp_timeout')} s",
        f"  Links open:               {len(info.get('links', []))}",
    ]
    for link in info.get("links", []):
        up = max(0, int(now - float(link.get("since", now))))
        lines.append(
            f"    link {link['id']}: {link['peer']} ({link.get('client') or 'unnamed'}), "
            f"up {up} s, {link['doing']}, {link['operations']} operation(s), "
            + (f"idle timeout {link['idle_timeout']} s" if link.get("mode") != "peer-to-peer"
               else "peer-to-peer (no idle timeout)")
        )
    return lines + peer_link_lines(info, PROG)
