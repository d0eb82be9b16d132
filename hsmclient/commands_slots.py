"""hsmclient's ``slot list`` and ``verify``: what the servers show this client, by slot.

    hsmclient slot list [--json]      one line per slot: id, label, serial, server, state
    hsmclient verify [--json]         (Luna: vtl verify) each server's partitions, or why not

``slot list`` asks the running daemon (the slot ids applications see are its); ``verify``
asks it too when it runs, and otherwise dials the servers itself, as Luna's ``vtl
verify`` does, so that a new registration can be checked before anything is started.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

import trio

from hsmclient.daemon import (
    SlotLine,
    close_backend,
    load_backend,
    server_states,
    slot_lines,
)
from hsmclient.settings import SCHEMA, Layout, Settings
from hsmclient.slots import SlotMap
from ped.daemon.config import ConfigError, load_config
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from ped.errors import PedError
from ped.tls import PinStore
from ped.tls.pins import Program


def add_slot_parsers(commands: Any, common: Any) -> None:
    slot = commands.add_parser("slot", help="the slots PKCS#11 applications see",
                               description="One slot per partition a server assigned to "
                               "this client; slot ids never change.")
    actions = slot.add_subparsers(dest="action", metavar="{list}")
    listing = actions.add_parser("list", help="id, label, serial, server and state of each "
                                 "slot (asks the running hsmclient)")
    common(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    verify = commands.add_parser(
        "verify", help="each server's partitions for this client, or why not (Luna: vtl "
        "verify)")
    common(verify)
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(action="verify")


def _settings(home: Path, args: argparse.Namespace) -> Settings:
    path = Path(args.config).expanduser() if args.config else Layout(home).config
    return Settings.from_mapping(SCHEMA.merge(load_config(path, SCHEMA), {}))


def _ask_daemon(home: Path, settings: Settings) -> dict[str, Any]:
    return control_request_sync(Layout(home).control, "slots",
                                timeout=settings.slot_query_timeout + 5.0, what="hsmclient")


def slot_list_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``slot list``: the running daemon's slots."""
    try:
        answer = _ask_daemon(home, _settings(home, args))
    except ControlUnavailable:
        err.write(f"{prog} is not running (home {home}); start it with: {prog} mode start"
                  f" --home {home}\n(`{prog} verify` asks the servers without it)\n")
        return EXIT_NOT_RUNNING
    except (ControlError, ConfigError) as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    if args.json:
        out.write(json.dumps(answer) + "\n")
        return EXIT_OK if answer.get("slots") is not None else EXIT_ERROR
    if answer.get("slots") is None:
        err.write(f"{prog}: cannot list the slots: {answer.get('error')}\n")
        return EXIT_ERROR
    lines = [SlotLine(**row) for row in answer["slots"]]
    if not lines:
        if not answer.get("servers"):
            out.write(f"No slots: no server registered. Add one with: {prog} server "
                      "register --name NAME --certificate FILE --ip ADDRESS\n")
        else:
            out.write(f"No slots: no server shows this client a partition; see {prog} "
                      "verify\n")
        return EXIT_OK
    out.write(format_slots(lines))
    return EXIT_OK


def format_slots(lines: list[SlotLine]) -> str:
    """The slot table: one line per slot, id first."""
    rows = [("Slot", "Label", "Serial", "Server", "State")] + [
        ("-" if s.slot_id is None else str(s.slot_id), s.label or "-", s.serial or "-",
         s.server, s.state_words()) for s in lines]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  "
        + r[4] + "\n" for r in rows)


async def _ask_servers(home: Path, pins: PinStore, settings: Settings) -> dict[str, Any]:
    backend = load_backend(home, pins, SlotMap(home))
    try:
        with trio.move_on_after(settings.slot_query_timeout):
            lines = await slot_lines(backend)
            return {"slots": [line.to_json() for line in lines], "error": "",
                    "servers": server_states(pins, lines)}
        why = f"the servers did not answer within {settings.slot_query_timeout} s"
        return {"slots": None, "error": why, "servers": server_states(pins, None)}
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await close_backend(backend)


def verify_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``verify``: each registered server with the partitions it shows this client."""
    pins = PinStore(home, program=prog)
    try:
        settings = _settings(home, args)
        if not pins.list():
            err.write(f"{prog}: no server registered; add one with: {prog} server register "
                      "--name NAME --certificate FILE --ip ADDRESS\n")
            return EXIT_ERROR
        try:
            answer = _ask_daemon(home, settings)
        except ControlUnavailable:
            answer = trio.run(_ask_servers, home, pins, settings)
    except (PedError, OSError) as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    if args.json:
        out.write(json.dumps(answer) + "\n")
    else:
        out.write(describe_servers(answer))
    if answer.get("slots") is None:
        if not args.json:
            err.write(f"{prog}: {answer.get('error')}\n")
        return EXIT_ERROR
    bad = [s for s in answer["servers"] if s["state"].startswith("server ")]
    return EXIT_ERROR if bad else EXIT_OK


def describe_servers(answer: dict[str, Any], *, with_slots: bool = True) -> str:
    """Each server, its state and (*with_slots*) the partitions it shows this client."""
    rows = answer.get("slots") or []
    text = []
    for server in answer.get("servers", []):
        text.append(f"Server {server['name']} ({server['address']}): {server['state']}\n")
        for row in rows if with_slots else ():
            if row["server"] == server["name"] and row.get("serial"):
                text.append(f"    slot {row['slot_id']}: partition {row['label'] or '-'} "
                            f"(serial {row['serial']}), {row['state']}\n")
        if server["state"].endswith("no partition assigned to this client"):
            text.append("    on the HSM host: pedhsm client assignpartition --client NAME "
                        "--partition PARTITION\n")
    return "".join(text)
