"""hsmclient's identity and server registry commands (``certificate``, ``server``, ``vtl``).

    hsmclient certificate regen | show | export FILE
    hsmclient server register --name N --certificate FILE --ip A [--port 1792]
    hsmclient server list | delete --name N
    hsmclient vtl addServer -n IP -c FILE [--port 1792] | listServers | deleteServer -n IP

The identity is ``HOME/identity*`` (`ped.tls`, made on first use); servers are pinned in
``HOME/pins.sqlite3`` (`ped.tls.PinStore`, program ``hsmclient``: noun "server", dials
port 1792 by default).  A running daemon reads the registry afresh for every new
connection, so nothing needs a restart.  ``vtl`` is Luna's spelling: a server is named
by its IP address there.  Deleting a server retires its slot ids (`hsmclient.slots`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from hsmclient.slots import SlotMap, SlotMapError
from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.tls import PinStore, TlsError, load_certificate
from ped.tls import cli as tls_cli
from ped.tls.pins import ROLES, Program

PROG: Program = "hsmclient"
ROLE = ROLES[PROG]
DEFAULT_PORT = ROLE.default_port or 1792


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535 (a bad one is a usage error, exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


# ----------------------------------------------------------------------------- parsers


def add_certificate_parser(commands: Any, common: Any) -> None:
    cert = commands.add_parser(
        "certificate", help="this client's TLS certificate (what pedhsm registers)",
        description="hsmclient's own key pair and self-signed certificate (made on first "
        "use), which each HSM registers with `pedhsm client register`.")
    actions = cert.add_subparsers(dest="action", metavar="{regen,show,export}")
    regen = actions.add_parser(
        "regen", help="make a new key pair and certificate (every HSM must register the "
        "new one)")
    common(regen)
    show = actions.add_parser("show", help="print subject, validity and SHA-256 fingerprint")
    common(show)
    export = actions.add_parser(
        "export", help="write the certificate (never the key) to FILE for the HSM")
    common(export)
    export.add_argument("file", metavar="FILE", help="where to write the PEM certificate")


def add_server_parser(commands: Any, common: Any) -> None:
    reg = commands.add_parser(
        "server", help="register, delete or list HSM servers",
        description="HSM servers (pedhsm's listener) this client dials: name, address and "
        "pinned certificate.")
    actions = reg.add_subparsers(dest="action", metavar="{register,delete,list}")
    register = actions.add_parser("register", help="pin a server's certificate under a name")
    common(register)
    register.add_argument("--name", required=True,
                          help="name (letters, digits, '.', '_', '-'; up to 64)")
    register.add_argument("--certificate", required=True, metavar="FILE",
                          help="the PEM file the HSM wrote with `pedhsm ntls certificate "
                          "export FILE`")
    register.add_argument("--ip", required=True, help="the HSM host's address")
    register.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                          help=f"pedhsm's client port (default {DEFAULT_PORT})")
    delete = actions.add_parser(
        "delete", help="unpin a server (its slot ids are retired, never reused)")
    common(delete)
    delete.add_argument("--name", required=True)
    listing = actions.add_parser("list", help="list registered servers")
    common(listing)


def add_vtl_parser(commands: Any, common: Any) -> None:
    vtl = commands.add_parser(
        "vtl", help="Luna's spellings: vtl addServer / listServers / deleteServer / verify",
        description="Luna's vtl commands; a server is named by its IP address.")
    actions = vtl.add_subparsers(dest="action",
                                 metavar="{addServer,listServers,deleteServer,verify}")
    add = actions.add_parser("addServer", aliases=["addserver"],
                             help="= server register --name IP --ip IP --certificate FILE")
    common(add)
    add.add_argument("-n", dest="ip", required=True, metavar="IP", help="the server's address")
    add.add_argument("-c", dest="certificate", required=True, metavar="FILE",
                     help="the server's certificate")
    add.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    add.set_defaults(action="register", name=None)
    listing = actions.add_parser("listServers", aliases=["listservers"],
                                 help="= server list")
    common(listing)
    listing.set_defaults(action="list")
    delete = actions.add_parser("deleteServer", aliases=["deleteserver"],
                                help="= server delete --name IP")
    common(delete)
    delete.add_argument("-n", dest="name", required=True, metavar="IP")
    delete.set_defaults(action="delete")
    verify = actions.add_parser("verify", help="= hsmclient verify")
    common(verify)
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(action="verify")


# ----------------------------------------------------------------------------- commands


def _replaced_advice(prog: Program, old: str) -> str:
    there = f"{ROLE.other} {ROLE.other_noun}"
    return (f"It replaces {old}. Every HSM that registered the old one must "
            f"now register this one: export it with `{prog} certificate "
            f"export FILE`, then on the HSM host: {there} delete --name NAME "
            f"and {there} register --name NAME --certificate FILE (and assign "
            "its partitions again)\n")


def certificate_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``certificate regen | show | export FILE``: `ped.tls.cli`'s, with the HSM's steps."""
    return tls_cli.certificate_command(
        prog, home, args, out, err,
        replaced_advice=_replaced_advice,
        export_advice=(f"On the HSM host: {ROLE.other} {ROLE.other_noun} register --name NAME "
                       f"--certificate FILE, then {ROLE.other} {ROLE.other_noun} "
                       "assignpartition --client NAME --partition PARTITION\n"),
    )


def server_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``server register | delete | list`` (and vtl's spellings of them)."""
    if args.action == "verify":  # vtl verify
        from hsmclient.commands_slots import verify_command

        return verify_command(prog, home, args, out, err)
    store = PinStore(home, program=prog)
    try:
        if args.action == "register":
            cert = load_certificate(args.certificate)
            name = args.name or args.ip
            peer = store.register(name, cert, ip=args.ip, port=args.port)
            out.write(f"Registered server {peer.name!r} at {peer.ip}:{peer.port}\n"
                      f"  certificate: {cert.subject.rfc4514_string()}\n"
                      f"  SHA-256 fingerprint: {peer.fingerprint}\n"
                      "Compare the fingerprint with the one `pedhsm ntls certificate "
                      "export` printed on the HSM host.\n"
                      f"Then see its partitions with: {prog} verify\n")
            return EXIT_OK
        if args.action == "delete":
            peer = store.delete(args.name)
            retired = SlotMap(home).forget_server(peer.name)
            out.write(f"Deleted server {peer.name!r} ({peer.fingerprint}); applications "
                      "connecting from now on no longer see its partitions.\n")
            if retired:
                out.write(f"Its {retired} slot id(s) are retired: never given to another "
                          "partition.\n")
            return EXIT_OK
        peers = store.list()
        if not peers:
            out.write(f"No servers registered. Add one with: {prog} server register --name "
                      "NAME --certificate FILE --ip ADDRESS\n")
            return EXIT_OK
        tls_cli.write_peer_list(peers, True, out)
        return EXIT_OK
    except (TlsError, SlotMapError) as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR

