"""hsmclient's ``hagroup`` commands: HA groups of partitions served as one virtual slot.

    hsmclient hagroup creategroup --label L --slot S [--password C | --password-file F]
    hsmclient hagroup addmember --group L (--slot S | --serialnumber N) [--password...]
    hsmclient hagroup removemember --group L (--slot S | --serialnumber N)
    hsmclient hagroup listgroups [--json]
    hsmclient hagroup recover --group L [--password C | --password-file F]
    hsmclient hagroup retry --group L --count N       (0, the default: no automatic recovery)
    hsmclient hagroup interval --interval S           (the recovery poll, 60 s by default)
    hsmclient hagroup synchronize --group L (--enable | --disable) [--password...]
    hsmclient hagroup deletegroup --label L

LunaCM's spellings work too (``hagroup createGroup -label L -slot S -password C``).
Creating a group and adding a member need the members' HSMs and the Crypto Officer's
challenge (asked for when neither option gives it), so the running daemon does them over
its owner-only control socket; the other commands edit ``HOME/hagroups.json`` themselves
when no daemon runs (the daemon, when it runs, does it and applies it at once).
``recover`` needs the daemon; without a challenge it syncs the members with the one an
application logged in to the group holds, or leaves them "needs sync" until a login.
``synchronize --enable`` also checks every member's cloning domain (seed 003's
"conflicting settings for private key cloning" for one that differs) when the daemon
runs and has a challenge (given, or held).
"""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any, TextIO

from hsmclient.commands_clone import read_challenge_file
from hsmclient.ha.control import EDITS, member_rows, offline
from hsmclient.settings import Layout
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from ped.tls.pins import Program

#: Each action, LunaCM's spelling of it, and whether it needs the challenge.
ACTIONS = {
    "creategroup": ("createGroup", "create an HA group from one member slot (its Crypto "
                    "Officer's challenge is checked)"),
    "addmember": ("addMember", "add a member partition (same cloning domain and Crypto "
                  "Officer challenge); the group's objects are replicated to it"),
    "removemember": ("removeMember", "remove a member partition (its objects stay on it)"),
    "listgroups": ("listGroups", "each group's settings and members: alive or down, since "
                   "when and why, needs sync"),
    "recover": ("recover", "try now to bring every member out of use back (synced)"),
    "retry": ("retry", "automatic recovery attempts per member failure (0: none)"),
    "interval": ("interval", "seconds between automatic recovery attempts (all groups)"),
    "synchronize": ("synchronize", "turn object replication on or off for a group"),
    "deletegroup": ("deleteGroup", "delete a group (the members and their objects stay)"),
}
#: What needs the challenge (asked for when no option gives it).
NEEDS_CHALLENGE = ("creategroup", "addmember")


def add_hagroup_parser(commands: Any, common: Any) -> None:
    ha = commands.add_parser("hagroup", help="HA groups: partitions mirrored as one slot")
    actions = ha.add_subparsers(dest="action", metavar="{" + ",".join(ACTIONS) + "}")
    for name, (luna, text) in ACTIONS.items():
        p = actions.add_parser(name, aliases=[luna] if luna != name else [], help=text)
        p.set_defaults(action=name)
        common(p)
        if name in ("creategroup", "deletegroup"):
            p.add_argument("--label", required=True, help="the group's label")
        if name not in ("creategroup", "deletegroup", "listgroups", "interval"):
            p.add_argument("--group", required=True, metavar="LABEL", help="the group")
        if name in ("creategroup", "addmember", "removemember"):
            which = p.add_mutually_exclusive_group(required=True)
            which.add_argument("--slot", type=int, metavar="S", help="the member's slot id")
            if name != "creategroup":
                which.add_argument("--serialnumber", metavar="N",
                                   help="the member partition's serial number")
        if name in (*NEEDS_CHALLENGE, "recover", "synchronize"):
            given = p.add_mutually_exclusive_group()
            given.add_argument("--password", metavar="CHALLENGE",
                               help="the Crypto Officer's challenge (LunaCM's spelling; "
                               "prefer --password-file or the prompt)")  # fmt: skip
            given.add_argument("--password-file", metavar="FILE",
                               help="a file holding the challenge (one line)")
        if name == "listgroups":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "retry":
            p.add_argument("--count", type=int, required=True, metavar="N")
        if name == "interval":
            p.add_argument("--interval", type=int, required=True, metavar="S")
        if name == "synchronize":
            on = p.add_mutually_exclusive_group(required=True)
            on.add_argument("--enable", dest="enable", action="store_true", default=None)
            on.add_argument("--disable", dest="enable", action="store_false")


def _request(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("label", "group", "slot", "serialnumber", "count", "interval", "enable")
    return {"action": args.action} | {k: getattr(args, k) for k in keys if hasattr(args, k)}


def hagroup_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """Run one ``hagroup`` action (see the module docstring)."""
    if not getattr(args, "action", None):
        err.write(f"{prog}: hagroup needs an action: {', '.join(ACTIONS)}\n")
        return EXIT_ERROR
    request = _request(args)
    try:
        if getattr(args, "password_file", None):
            request["password"] = read_challenge_file(args.password_file)
        elif getattr(args, "password", None):
            request["password"] = args.password
        elif args.action in NEEDS_CHALLENGE:
            request["password"] = getpass.getpass("Crypto Officer challenge: ")
    except ValueError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    try:
        answer = control_request_sync(Layout(home).control, "hagroup", request,
                                      timeout=120.0, what="hsmclient")  # fmt: skip
    except ControlUnavailable:
        if args.action not in (*EDITS, "listgroups"):
            err.write(f"{prog} is not running (home {home}); start it with: {prog} mode "
                      f"start --home {home}\n")  # fmt: skip
            return EXIT_NOT_RUNNING
        answer = offline(home, args.action, request)
    except ControlError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    if answer.get("error"):
        err.write(f"{prog}: hagroup {args.action}: {answer['error']}\n")
        return EXIT_ERROR
    if args.action == "listgroups":
        if args.json:
            out.write(json.dumps(answer, indent=1) + "\n")
        elif not answer["groups"]:
            out.write(f"No HA group; make one with: {prog} hagroup creategroup --label L "
                      "--slot S\n")  # fmt: skip
        else:
            out.write(f"HA recovery poll interval: {answer['interval']} s\n\n")
            out.write("\n".join(member_rows(answer["groups"])))
        return EXIT_OK
    for line in answer.get("said", []):
        out.write(line + "\n")
    return EXIT_OK
