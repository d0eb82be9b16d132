"""pedclient's PED id commands: ``mode assignid ... testid``, and the daemon's id lookup.

The map itself (its file, its rules) is `pedclient.ids`.  The editing commands work
whether pedclient runs or not (a running pedclient reads the file at each lookup).
``testid`` dials the id's pedserver from this process, as pedclient would, sends the link
hello, and reports each stage: pedserver reachable, link hello accepted, the PED device
as pedserver describes it; it says what it did not check (the orange key: only an HSM's
``hsm ped connect`` holds an RPV).  Exit codes: 0 done (testid: the PED answers), 1 the
command failed (an unknown id, a duplicate, the PED does not answer), 2 a bad command line.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

from ped.daemon import arguments, exits
from ped.daemon.config import ConfigError, load_config
from ped.daemon.control import ControlError, Progress
from ped.daemon.home import DaemonLayout, HomeError, resolve_home
from ped.errors import RemoteProtocolError
from ped.link.connection import Hop, LinkConnection, Side
from ped.link.errors import LinkClosed
from ped.link.messages import Close, ConnectRequest, LinkHello, LinkRefused, LinkWelcome
from ped.link.stream import LinkStream
from ped.wire.types import CloseCode
from pedclient.dial import DialError, tcp_dialer
from pedclient.ids import (
    DEFAULT_PEDSERVER_PORT,
    MAX_ID,
    MIN_ID,
    PedAddress,
    PedIdError,
    PedIdMap,
    PedIdStore,
    check_host,
    check_id,
    check_port,
)
from pedclient.settings import SCHEMA, Settings

PROG = "pedclient"
ID_MODES = ("assignid", "setid", "getid", "releaseid", "deleteid", "testid")
#: The control command an HSM's ``hsm ped connect --id N`` sends (args ``{"id": N}``).
LOOKUP_COMMAND = "ped-id"


# ---------------------------------------------------------------------- command line


def _typed(check: Callable[[Any], Any], parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a bad value is a usage error (exit 2) with our words."""

    def convert(text: str) -> Any:
        try:
            return check(parse(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        except PedIdError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


_ID = _typed(check_id, int)
_PORT = _typed(check_port, int)
_HOST = _typed(check_host, str)


def _add_id(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--id", type=_ID, required=required, metavar="N",
                   help=f"the PED id ({MIN_ID}-{MAX_ID})")


def _add_address(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--ip", "--id-ip", "--id_ip", dest="ip", type=_HOST, required=required,
                   metavar="ADDR", help="pedserver's IP address or host name")
    p.add_argument("--port", "--id-port", "--id_port", dest="port", type=_PORT,
                   default=None, metavar="P",
                   help=f"pedserver's port (default {DEFAULT_PEDSERVER_PORT})")


def add_id_parsers(modes: Any) -> None:
    """``mode assignid | setid | getid | releaseid | deleteid | testid`` (Luna: -mode)."""
    for name, help_text in (
        ("assignid", "give a new or released PED id a pedserver address"),
        ("setid", "set (create or change) a PED id's pedserver address"),
    ):
        p = modes.add_parser(name, help=help_text, description=help_text)
        arguments.add_home_options(p, PROG)
        _add_id(p)
        _add_address(p, required=True)
    p = modes.add_parser("getid", help="print a PED id's address, an address's id, or all ids")
    arguments.add_home_options(p, PROG)
    _add_id(p, required=False)
    _add_address(p, required=False)
    for name, help_text in (
        ("releaseid", "un-assign a PED id's address; the number stays reserved"),
        ("deleteid", "forget a PED id"),
        ("testid", "check that the PED at an id answers (pedserver, link hello, PED device)"),
    ):
        p = modes.add_parser(name, help=help_text, description=help_text)
        arguments.add_home_options(p, PROG)
        _add_id(p)


def id_command(args: argparse.Namespace, layout: DaemonLayout, config_path: Path,
               out: TextIO, err: TextIO) -> int:
    """Run one of `ID_MODES`; returns the exit code."""
    store = PedIdStore(layout.home)
    try:
        if args.mode == "getid":
            return _getid(args, store, out)
        if args.mode == "testid":
            address = store.load().address(args.id)
            return trio.run(_testid, args.id, address, _timeout(config_path), out)
        try:
            resolve_home(layout.home, PROG)  # an edit makes the home (owner-only)
        except HomeError as exc:
            raise PedIdError(str(exc)) from None
        with store.locked():
            ids = store.load()
            text, changed = _edit(args, ids)
            store.save(changed)
    except PedIdError as exc:
        err.write(f"{PROG}: {exc}\n")
        return exits.EXIT_ERROR
    except OSError as exc:
        err.write(f"{PROG}: cannot write {store.path}: {exc.strerror or exc}\n")
        return exits.EXIT_ERROR
    out.write(text + "\n")
    return exits.EXIT_OK


def _edit(args: argparse.Namespace, ids: PedIdMap) -> tuple[str, PedIdMap]:
    n = args.id
    if args.mode in ("assignid", "setid"):
        address = PedAddress(args.ip, args.port or DEFAULT_PEDSERVER_PORT)
        if args.mode == "assignid":
            return f"PED id {n} assigned to {address.target}.", ids.assign(n, address)
        before = ids.entries.get(n)
        was = ("new" if n not in ids.entries else
               "was released" if before is None else f"was {before.target}")
        return f"PED id {n} set to {address.target} ({was}).", ids.set(n, address)
    if args.mode == "releaseid":
        return (f"PED id {n} released (was {ids.address(n).target}); the number stays reserved: "
                f"`pedclient mode assignid --id {n} --ip ... --port ...` gives it an address "
                "again.", ids.release(n))
    before = ids.entries.get(n)
    changed = ids.delete(n)
    return f"PED id {n} deleted ({'was released' if before is None else before.target}).", changed


def _getid(args: argparse.Namespace, store: PedIdStore, out: TextIO) -> int:
    ids = store.load()
    if args.id is not None:
        if args.ip is not None:
            raise PedIdError("give --id (to print its address) or --ip (to print its id), "
                             "not both")
        out.write(f"PED id {args.id}: {ids.address(args.id).target}\n")
        return exits.EXIT_OK
    if args.ip is not None:
        address = PedAddress(args.ip, args.port or DEFAULT_PEDSERVER_PORT)
        found = ids.id_of(address)
        if found is None:
            raise PedIdError(f"no PED id has {address.target} ({ids.known()})")
        out.write(f"{address.target} is PED id {found}\n")
        return exits.EXIT_OK
    out.write("\n".join(describe_ids(ids.rows())) + "\n")
    return exits.EXIT_OK


def describe_ids(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The id map for a person (``getid`` and ``mode show``)."""
    if not rows:
        return [f"  PED ids:                  none (assign one with `{PROG} mode assignid "
                f"--id N --ip ADDRESS --port {DEFAULT_PEDSERVER_PORT}`)"]
    lines = [f"  PED ids:                  {len(rows)}"]
    for row in rows:
        lines.append(f"    PED id {row['id']}: {row['target'] or '(released: no address)'}")
    return lines


def _timeout(config_path: Path) -> float:
    try:
        values = SCHEMA.merge(load_config(config_path, SCHEMA), {})
    except ConfigError as exc:
        raise PedIdError(str(exc)) from None
    return float(Settings.from_mapping(values).connect_timeout)


# ---------------------------------------------------------------------- testid


async def _testid(ped_id: int, address: PedAddress, timeout: float, out: TextIO) -> int:
    """Dial, hello, read the welcome; one line per stage; 0 when the PED answers."""
    out.write(f"Testing PED id {ped_id} -> pedserver {address.target} "
              f"(timeout {timeout:g} s)\n")
    stages, ready = await probe(address, timeout)
    for label, text in stages:
        out.write(f"  {label + ':':<22}{text}\n")
    out.write(f"PED id {ped_id} answers: `hsm ped connect --id {ped_id}` can use it.\n"
              if ready else f"PED id {ped_id} does not answer (see above).\n")
    return exits.EXIT_OK if ready else exits.EXIT_ERROR


NOT_CHECKED = ("Not checked", "the orange key (RPV) and the HSM's end-to-end channel: "
               "only an HSM's `hsm ped connect` holds the RPV")


async def probe(address: PedAddress, timeout: float) -> tuple[list[tuple[str, str]], bool]:
    """(stage, result) for: pedserver reachable, link hello, PED device, not checked; and
    whether the PED answers (every stage passed and pedserver has its PED)."""
    skipped = "not checked (an earlier stage failed)"
    request = ConnectRequest(host=address.host, port=address.port)
    deadline = trio.current_time() + timeout
    try:
        stream = await tcp_dialer(request, timeout)
    except DialError as exc:
        return [("pedserver reachable", f"no: {exc.text}"), ("link hello", skipped),
                ("PED device", skipped), NOT_CHECKED], False
    reached = ("pedserver reachable", f"yes (TCP connection to {address.target} accepted)")
    server = LinkStream(stream, LinkConnection(Hop.REMOTE, Side.INITIATOR))
    try:
        hello = await _hello(server, address, deadline, timeout)
    finally:
        with trio.CancelScope(shield=True):
            await server.send_close_quietly(Close(CloseCode.NORMAL, "testid done"))
    if isinstance(hello, str):
        return [reached, ("link hello", hello), ("PED device", skipped), NOT_CHECKED], False
    d = hello.device
    facts = ", ".join(f"{k} {v}" for k, v in (("model", d.model), ("firmware", d.firmware),
                                               ("serial", d.serial), ("mode", d.mode)) if v)
    device = (f"connected ({facts})" if d.connected and facts else "connected" if d.connected
              else "NOT connected: pedserver has no PED; plug it in at the workstation "
              "(`pedserver mode show` there)")
    welcome = (f"accepted (pedserver {hello.server_name or '?'}, link version "
               f"{hello.version}, idle timeout {hello.idle_timeout} s)")
    return [reached, ("link hello", welcome), ("PED device", device), NOT_CHECKED], d.connected


async def _hello(server: LinkStream, address: PedAddress, deadline: float,
                 timeout: float) -> LinkWelcome | str:
    """pedserver's welcome, or what went wrong in words."""
    name = f"{socket.gethostname()[:40]}/testid"
    try:
        with trio.move_on_at(deadline) as scope:
            await server.send(LinkHello(client_name=name))
            event = await server.receive()
    except RemoteProtocolError as exc:
        return (f"failed: {address.target} does not speak the Remote PED link protocol "
                f"({type(exc).__name__}): is it a pedserver? is the port right?")
    except LinkClosed:
        return f"failed: {address.target} closed the connection during the link hello"
    if scope.cancelled_caught:
        return (f"failed: no link welcome within {timeout:g} s: is {address.target} "
                "a pedserver?")
    if isinstance(event, LinkWelcome):
        return event
    if isinstance(event, LinkRefused):
        return (f"refused by pedserver: {event.text or event.code.name.lower()} "
                "(pedserver answers, but would not take a link now)")
    return (f"failed: {address.target} closed the connection during the link hello: "
            "is it a pedserver? is the port right?")


# ---------------------------------------------------------------------- the daemon's lookup


def lookup_command(store: PedIdStore) -> Callable[[dict[str, Any], Progress], Any]:
    """The control command ``ped-id {"id": N}`` -> ``{"id", "host", "port", "target"}``;
    an unknown id answers code ``unknown-id`` with the ids there are and the fix."""

    async def lookup(args: dict[str, Any], progress: Progress) -> dict[str, Any]:
        try:
            ped_id = check_id(args.get("id"))
            ids = await trio.to_thread.run_sync(store.load)
            address = ids.address(ped_id)
        except PedIdError as exc:
            raise ControlError(str(exc), "unknown-id") from None
        return {"id": ped_id, "host": address.host, "port": address.port,
                "target": address.target}

    return lookup


def show_ids(store: PedIdStore) -> dict[str, Any]:
    """``mode show``'s entry: the ids, or why the map cannot be read."""
    try:
        return {"ped_ids": store.load().rows()}
    except PedIdError as exc:
        return {"ped_ids": [], "ped_ids_problem": str(exc)}
