"""pedhsm's command line: every command word, its arguments and its help (argparse).

`hsm.cli` runs what this parses; LunaSH's words (`hsm.lunawords`) and Luna's single-dash
spellings are turned into these full spellings before argparse reads them.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from hsm.clientparser import add_client_commands
from hsm.current import CURRENT
from hsm.homes import default_home_text
from ped.cliutil import add_version_option
from ped.errors import PedError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
LONG_COMMANDS = {
    # commands that wait for a person at the PED: no short socket timeout
    "hsm.init",
    "hsm.login",
    "hsm.changepw",
    "partition.changepw",
    "role.changepw",
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


MAX_PED_ID = 999  # pedclient.ids' range (0-999); pedclient says so again at the lookup


def _ped_id(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_PED_ID:
        raise argparse.ArgumentTypeError(
            f"a PED id is a whole number from 0 to {MAX_PED_ID}, not {text!r}"
        )
    return int(text)


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


MAX_TYPED_CHALLENGE = 256  # as a challenge file's (hsm.cli) and the HSM's (hsm.roles)


def ask_challenge_twice() -> bytes:
    """A challenge secret typed on the terminal (not echoed), asked twice: a typing
    mistake is caught here, before the PED is asked for anything."""
    if not sys.stdin.isatty():
        raise HsmUsageError(
            "--challenge-file - asks for the challenge on a terminal, and there is none; "
            "give a file that holds it"
        )
    first = getpass.getpass("Challenge secret: ").encode()
    again = getpass.getpass("Enter it again: ").encode()
    if first != again:
        raise HsmUsageError("the two challenge secrets typed differ; nothing was sent")
    if not 1 <= len(first) <= MAX_TYPED_CHALLENGE:
        raise HsmUsageError(f"a challenge secret has 1-{MAX_TYPED_CHALLENGE} bytes")
    return first


class _TypedChallenge(argparse.Action):
    """``--challenge-file F``, where ``-`` asks for the challenge on the terminal, twice
    (`ask_challenge_twice`); the shell then sends it as a file's would be sent."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:  # fmt: skip
        if values == "-":
            namespace.challenge = ask_challenge_twice().hex()
            values = None
        setattr(namespace, self.dest, values)


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
    p.add_argument("--ntls-port", dest="ntls_port", type=int, default=1792, metavar="N",
                   help="the client listener's TCP port (default 1792; 0: no listener)")
    p.add_argument("--ntls-ip", dest="ntls_ip", metavar="A",
                   help="the address the client listener binds (default: every address)")
    p.add_argument("--backup", action="store_true",
                   help="a Backup HSM: it holds backup partitions (`hsmclient partition "
                   "archive`), no partitions; the home remembers it")  # fmt: skip
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
    leaf(hsm, "changepw", "hsm.changepw",
         "HSM SO (logged in): present the current blue key, then imprint a new blue key set "
         "(the old one stops working; a wrong key counts as a failed login)")
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
    p = leaf(vector, "init", "hsm.ped.vector.init", "create an RPV (or read an orange key's)")
    p.add_argument(
        "--remote",
        action="store_true",
        help="zeroized HSM only: imprint the RPV over a remote PED, keyed by a one-time "
        "password shown here and typed on the PED (needs --ip/--port or --peer)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--ip", help="with --remote: pedserver's host name or address")
    where.add_argument("--peer", metavar="NAME", help="with --remote: a peer-to-peer pedserver")
    p.add_argument("--port", type=int, default=1503, help="with --remote: pedserver's port")
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
    where.add_argument(
        "--id",
        dest="ped_id",
        type=_ped_id,
        metavar="N",
        help="a PED id: pedclient's name for a pedserver address "
        "(`pedclient mode assignid --id N --ip A --port P`)",
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
            "changepw",
            "partition.changepw",
            "partition SO (logged in): present the current blue key, then imprint a new blue "
            "key set (the old one stops working; a wrong key counts as a failed login)",
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
        if name == "init":
            p.add_argument(
                "--domain-from-red-key",
                action="store_true",
                help="join an existing cloning domain: read its red key set on the PED "
                "instead of imprinting a new one",
            )
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
    p = leaf(role, "changepw", "role.changepw",
             "a new PED secret (black/gray key set) and/or a new challenge secret for the CO "
             "or CU; the role or the partition SO logged in; the current key is read first "
             "(counted as a login); a new challenge deactivates the role")
    p.add_argument("--partition", help=_CURRENT_HELP)
    p.add_argument("--name", required=True, choices=["co", "cu"])
    p.add_argument("--challenge-file", dest="challenge_file", metavar="FILE",
                   action=_TypedChallenge,
                   help="the new challenge secret (default: generated, shown on the PED); "
                   "with --secret-only, the current one (required then); '-' asks for it on "
                   "the terminal, twice")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--challenge-only", dest="challenge_only", action="store_true",
                      help="change the challenge secret only (the PED key stays)")
    only.add_argument("--secret-only", dest="secret_only", action="store_true",
                      help="change the PED secret only (the challenge stays)")
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

    add_client_commands(groups, leaf, level)
    return parser
