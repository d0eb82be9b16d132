"""Command lines of the pinned-TLS daemons (the peer-to-peer mode's pedserver and pedclient).

    pedserver certificate regen | show | export FILE
    pedserver appliance register --name N --certificate FILE --ip A [--port 9697]
    pedserver appliance delete --name N | list
    pedserver mode connect --name N | disconnect --name N
    pedclient certificate regen | show | export FILE
    pedclient peer register --name N --certificate FILE | delete --name N | list

Every program of ``ped.tls.pins.ROLES`` can use the same parsers (its noun, whether it
dials, the other program's commands come from its role).  Registrations go straight to
the registry file in the daemon's home (``pins.sqlite3``, see `ped.tls.pins`); a running
daemon reads it afresh for every connection, so nothing needs a restart.
``mode connect/disconnect`` talk to the running pedserver over its control socket.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from ped.tls import (
    DEFAULT_PEER_PORT,
    PinStore,
    TlsError,
    describe,
    ensure_identity,
    export_certificate,
    load_certificate,
    regenerate_identity,
)
from ped.tls.pins import ROLES, Peer, Program


def _certificate_words(program: str) -> str:
    """How *program*'s identity commands begin (pedhsm's live under ``ntls``)."""
    return "pedhsm ntls certificate" if program == "pedhsm" else f"{program} certificate"


def _port_words(program: str) -> str:
    return "peer port" if program == "pedclient" else "port"


def common_name() -> str:
    """The subject CN of a new identity: this host's name (what the other side sees)."""
    return (socket.gethostname() or "remote-ped")[:64]


# ----------------------------------------------------------------------------- parsers


def add_certificate_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    prog: Program,
    common: Any,
) -> None:
    cert = commands.add_parser(
        "certificate", help="this daemon's TLS certificate for peer-to-peer mode",
        description=f"{prog}'s own key pair and self-signed certificate (made on first "
        "start), which the other side registers to accept this host.",
    )
    actions = cert.add_subparsers(dest="action", metavar="{regen,show,export}")
    regen = actions.add_parser(
        "regen", help="make a new key pair and certificate (the other side must register "
        "the new one)")
    common(regen)
    show = actions.add_parser("show", help="print subject, validity and SHA-256 fingerprint")
    common(show)
    export = actions.add_parser(
        "export", help="write the certificate (never the key) to FILE for the other side")
    common(export)
    export.add_argument("file", metavar="FILE", help="where to write the PEM certificate")


def add_registry_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    prog: Program,
    common: Any,
) -> None:
    role = ROLES[prog]
    noun = role.noun
    if prog == "pedserver":
        what = ("HSM hosts (appliances) this pedserver dials in peer-to-peer mode: name, "
                "address and pinned certificate")
    elif prog == "pedclient":
        what = ("pedservers (peers) allowed to dial this pedclient in peer-to-peer mode: "
                "name and pinned certificate")
    elif role.dials:
        what = f"{role.other}s ({noun}s) this {prog} dials: name, address and pinned certificate"
    else:
        what = f"{role.other}s ({noun}s) allowed to dial this {prog}: name and pinned certificate"
    reg = commands.add_parser(noun, help=f"register, delete or list {noun}s", description=what)
    actions = reg.add_subparsers(
        dest="action",
        metavar="{register,delete,list" + (",show}" if prog == "pedserver" else "}"))
    article = "an" if noun[0] in "aeiou" else "a"
    register = actions.add_parser(
        "register", help=f"pin the certificate of {article} {noun} under a name")
    common(register)
    register.add_argument("--name", required=True,
                          help="name (letters, digits, '.', '_', '-'; up to 64)")
    register.add_argument("--certificate", required=True, metavar="FILE",
                          help=f"the PEM file the other side wrote with `"
                          f"{_certificate_words(role.other)} export FILE`")
    if role.dials:
        port = role.default_port or DEFAULT_PEER_PORT
        where = "the HSM host's" if role.other in ("pedclient", "pedhsm") else f"{role.other}'s"
        register.add_argument("--ip", required=True,
                              help=f"{where} address (where {role.other} listens)")
        register.add_argument("--port", type=int, default=port,
                              help=f"{role.other}'s {_port_words(role.other)} (default {port})")
    delete = actions.add_parser(
        "delete", help=f"unpin {article} {noun} (its certificate is then refused as deleted)")
    common(delete)
    delete.add_argument("--name", required=True)
    # Luna's pedserver says `-appliance show`; `list` is the other nouns' word
    listing = actions.add_parser("list", aliases=["show"] if prog == "pedserver" else [],
                                 help=f"list registered {noun}s"
                                 + (" (Luna: -appliance show)" if prog == "pedserver" else ""))
    common(listing)


# ----------------------------------------------------------------------------- commands


def _peer_host_advice(prog: Program, old: str) -> str:
    other = f"{ROLES[prog].other} {ROLES[prog].other_noun}"
    return (f"It replaces {old}. Every host that registered the old one must "
            f"now register this one: export it with `{prog} certificate "
            f"export FILE`, then there: {other} delete --name NAME and "
            f"{other} register --name NAME --certificate FILE ...\n")


def certificate_command(
    prog: Program,
    home: Path,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    *,
    replaced_advice: Callable[[Program, str], str] = _peer_host_advice,
    export_advice: str = "",
) -> int:
    """``certificate regen | show | export FILE`` for any of the four programs.

    *replaced_advice* words what the other side must do after a regen (given the old
    fingerprint); *export_advice* is printed after an export (hsmclient's steps differ
    from the peer-to-peer daemons').
    """
    if args.action is None:
        err.write(f"{prog} certificate: say regen, show or export FILE "
                  f"(see {prog} certificate --help)\n")
        return 2
    try:
        if args.action == "regen":
            old = _current_fingerprint(home)
            identity = regenerate_identity(home, common_name())
            out.write(f"New certificate for {prog}:\n{describe(identity.certificate)}\n")
            if old is not None:
                out.write(replaced_advice(prog, old))
            return EXIT_OK
        identity = ensure_identity(home, common_name())
        if args.action == "show":
            out.write(f"{prog} certificate ({identity.path}):\n"
                      f"{describe(identity.certificate)}\n")
            return EXIT_OK
        export_certificate(identity.certificate, args.file)
        out.write(f"Wrote {prog}'s certificate (not its key) to {args.file}\n"
                  f"SHA-256 fingerprint: {identity.fingerprint}\n{export_advice}")
        return EXIT_OK
    except TlsError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    except OSError as exc:
        err.write(f"{prog}: {exc.strerror or exc}: {exc.filename or ''}\n")
        return EXIT_ERROR


def _current_fingerprint(home: Path) -> str | None:
    try:
        from ped.tls import load_identity

        return load_identity(home).fingerprint
    except TlsError:
        return None


def registry_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    store = PinStore(home, program=prog)
    noun = store.noun
    if args.action is None:
        err.write(f"{prog} {noun}: say register, delete or list (see {prog} {noun} --help)\n")
        return 2
    try:
        if args.action == "register":
            cert = load_certificate(args.certificate)
            if store.role.dials:
                peer = store.register(args.name, cert, ip=args.ip, port=args.port)
                where = f" at {peer.ip}:{peer.port}"
            else:
                peer = store.register(args.name, cert)
                where = ""
            out.write(f"Registered {noun} {peer.name!r}{where}\n"
                      f"  certificate: {cert.subject.rfc4514_string()}\n"
                      f"  SHA-256 fingerprint: {peer.fingerprint}\n"
                      "Compare the fingerprint with `certificate show` on that host.\n")
            if prog == "pedserver":
                out.write(f"Start the link with: pedserver mode connect --name {peer.name}\n")
            return EXIT_OK
        if args.action == "delete":
            peer = store.delete(args.name)
            out.write(f"Deleted {noun} {peer.name!r} ({peer.fingerprint}); its certificate "
                      "is refused from the next connection on.\n")
            if prog == "pedserver":
                out.write(f"A running link is ended with: pedserver mode disconnect --name "
                          f"{peer.name}\n")
            return EXIT_OK
        peers = store.list()
        if not peers:
            out.write(f"No {noun}s registered. Add one with: {prog} {noun} register "
                      f"--name NAME --certificate FILE"
                      f"{' --ip ADDRESS' if store.role.dials else ''}\n")
            return EXIT_OK
        write_peer_list(peers, store.role.dials, out)
        return EXIT_OK
    except TlsError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR


def write_peer_list(peers: Iterable[Peer], with_address: bool, out: TextIO) -> None:
    """One entry per registered peer: name (and address), fingerprint, subject, validity."""
    for peer in peers:
        cert = peer.certificate
        address = f"  {peer.ip}:{peer.port}" if with_address else ""
        out.write(f"{peer.name}{address}\n"
                  f"    fingerprint: {peer.fingerprint}\n"
                  f"    subject: {cert.subject.rfc4514_string()}, valid until "
                  f"{cert.not_valid_after_utc:%Y-%m-%d} UTC, registered "
                  f"{peer.registered_at}\n")


def connect_command(
    control: Path, action: str, name: str, out: TextIO, err: TextIO
) -> int:
    """``pedserver mode connect|disconnect --name N`` (asks the running pedserver)."""
    try:
        result = control_request_sync(control, action, {"name": name}, timeout=40.0,
                                      what="pedserver")
    except ControlUnavailable:
        err.write("pedserver: pedserver is not running; start it first with `pedserver "
                  "mode start ...`\n")
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        err.write(f"pedserver: {exc}\n")
        return EXIT_ERROR
    if action == "disconnect":
        out.write(f"Peer link {name!r} ended ({result.get('links_closed', 0)} link(s) "
                  "closed).\n")
        return EXIT_OK
    if result.get("state") == "connected":
        out.write(f"Peer link {name!r} is up: {result.get('address')}, certificate "
                  f"{result.get('fingerprint')}.\npedserver keeps it up (reconnecting if it "
                  f"drops) until: pedserver mode disconnect --name {name}\n")
        return EXIT_OK
    error = result.get("error") or result.get("last_error") or "no answer yet"
    err.write(f"pedserver: peer link {name!r} to {result.get('address')} is not up: {error}\n"
              f"pedserver keeps trying; see `pedserver mode show`, stop with `pedserver "
              f"mode disconnect --name {name}`\n")
    return EXIT_ERROR


# ----------------------------------------------------------------------------- show


def peer_link_lines(info: dict[str, Any], prog: Program) -> list[str]:
    """The ``mode show`` lines for peer links."""
    now = time.time()
    lines: list[str] = []
    if prog == "pedserver":
        appliances = info.get("peer_links") or []
        lines.append(f"  Peer links (pedserver dials): {len(appliances)}")
        for a in appliances:
            state = a.get("state", "?")
            if state == "connected":
                state += f", spare {'ready' if a.get('spare') else 'being dialled'}"
            elif a.get("next_try"):
                state += f", next try in {max(0, int(float(a['next_try']) - now))} s"
            lines.append(f"    appliance {a['name']} at {a.get('address')}: {state}, "
                         f"{a.get('links', 0)} link(s) in use")
            lines.append(f"      fingerprint: {a.get('fingerprint') or '-'}")
            if a.get("last_error") and a.get("state") != "connected":
                lines.append(f"      last error: {a['last_error']}")
        return lines
    listen = info.get("peer_listen")
    if not listen:
        lines.append("  Peer-to-peer:             off (start with --peer-listen to accept "
                     "pedservers)")
        return lines
    lines.append(f"  Peer-to-peer:             listening on {listen}")
    for p in info.get("peer_links") or []:
        reg = "" if p.get("registered") else " (NOT registered any more)"
        lines.append(f"    peer {p['name']}{reg}: {p.get('state')}"
                     + (f" from {p['address']}" if p.get("address") and
                        p.get("state") == "connected" else "")
                     + f", {p.get('spares', 0)} spare, {p.get('links', 0)} link(s) in use")
        lines.append(f"      fingerprint: {p.get('fingerprint') or '-'}")
    return lines
