"""hsmclient's ``partition archive``: backups on a Backup HSM, relayed unread, and restores.

    hsmclient partition archive backup --source-slot S --slot BACKUP --partition NAME
                                       [--objects L] [--append | --replace]
    hsmclient partition archive restore --slot BACKUP --partition NAME --target-slot T
                                        [--add | --replace]
    hsmclient partition archive list --slot BACKUP [--json]
    hsmclient partition archive delete --slot BACKUP --partition NAME

A Backup HSM (``pedhsm mode start --backup``) shows hsmclient one *admin slot* (label
``backup HSM SERIAL``); the archive's ``ARCHIVE`` requests (docs/protocol/client.md, op
20) open each end of a clone (docs/protocol/cloning.md) on it and on the partition's
slot, then hsmclient relays the sealed frames unread (`hsmclient.commands_clone.relay`)
in batches.  A backup or a restore is one transaction on the receiving end: the command
(or the next ``archive list``) says whether it happened.  The partition's Crypto Officer
logs in with the challenge given as for ``partition clone``.  A backup partition holds at
most what one restore carries (`MAX_ARCHIVE_OBJECTS`): the Backup HSM refuses a backup
past it, `restore` refuses one over it before the target is asked anything, and ``archive
list`` warns as it nears.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from hsmclient.commands_clone import MAX_HOPS, ask_daemon, co_challenge, relay
from hsmclient.commands_clone import partition_command as clone_command_line
from hsmclient.remote import RemoteApplication, RemoteBackend
from ped.daemon.exits import EXIT_ERROR, EXIT_OK
from ped.ntls import messages as m
from ped.ntls.messages import ArchiveAction, ArchiveMode
from ped.pkcs11.constants import CKR, CKU
from ped.pkcs11.token import Pkcs11Error
from ped.tls.pins import Program

#: Objects one backup partition may hold: what one restore carries (the cloning protocol's
#: bound on one clone, `ped.cloning.MAX_OBJECTS`, which hsmclient does not import; a Backup
#: HSM refuses a backup that would pass it, `hsm.backup_limit`).
MAX_ARCHIVE_OBJECTS = 100_000
#: `archive list` warns about a backup partition holding this share of it or more.
NEAR_LIMIT = 0.9
Tap = Callable[[bytes], None] | None


def _archive(action: ArchiveAction, mode: ArchiveMode = ArchiveMode.NEW, peer: str = "",
             name: str = "", labels: tuple[str, ...] = ()
             ) -> Callable[[int, int], m.Request]:  # fmt: skip
    return lambda rid, session: m.Archive(rid, session, action, mode, peer, name, labels)


async def archive_list(app: RemoteApplication, admin: int) -> list[dict[str, Any]]:
    """The backup partitions of the Backup HSM whose admin slot *admin* is a session of."""
    data = await app.clone_call(admin, _archive(ArchiveAction.LIST))
    rows = json.loads(data.decode())
    assert isinstance(rows, list)
    return rows


def _row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for row in rows:
        if row.get("name") == name:
            return row
    raise Pkcs11Error(CKR.ARGUMENTS_BAD, f"no backup partition {name!r} on this Backup HSM "
                      "(`hsmclient partition archive list` lists them)")  # fmt: skip


async def backup(app: RemoteApplication, source: int, admin: int, name: str,
                 mode: ArchiveMode = ArchiveMode.NEW, labels: tuple[str, ...] = (),
                 *, tap: Tap = None) -> dict[str, Any]:  # fmt: skip
    """Back the objects of *source*'s partition up into backup partition *name*; its row."""
    serial = (await app.clone_call(admin, _archive(
        ArchiveAction.BACKUP_TARGET, mode, app.session_serial(source), name))).decode()  # fmt: skip
    frames = await app.clone_call(source, _archive(
        ArchiveAction.BACKUP_SOURCE, ArchiveMode.NEW, serial, "", labels))  # fmt: skip
    await relay(app, source, admin, frames, max_hops=MAX_ARCHIVE_OBJECTS + MAX_HOPS, tap=tap)
    return _row(await archive_list(app, admin), name)


async def restore(app: RemoteApplication, admin: int, target: int, name: str,
                  mode: ArchiveMode = ArchiveMode.ADD, *, tap: Tap = None
                  ) -> dict[str, Any]:  # fmt: skip
    """Restore backup partition *name* into *target*'s partition; the backup's row."""
    row = _row(await archive_list(app, admin), name)
    held = int(row["objects"])
    if held > MAX_ARCHIVE_OBJECTS:  # up front, before the target is asked anything
        raise Pkcs11Error(CKR.DEVICE_MEMORY,
                          f"backup partition {name!r} holds {held} objects, more than the "
                          f"{MAX_ARCHIVE_OBJECTS} one restore carries: restore refused before "
                          "anything moved; back its source partition up anew, with --replace, "
                          "while that partition exists")  # fmt: skip
    await app.clone_call(target, _archive(ArchiveAction.RESTORE_TARGET, mode, row["serial"]))
    target_serial = app.session_serial(target)
    frames = await app.clone_call(admin, _archive(
        ArchiveAction.RESTORE_SOURCE, ArchiveMode.NEW, target_serial, name))  # fmt: skip
    await relay(app, admin, target, frames, max_hops=int(row["objects"]) + MAX_HOPS, tap=tap)
    return row


async def delete(app: RemoteApplication, admin: int, name: str) -> None:
    await app.clone_call(admin, _archive(ArchiveAction.DELETE, name=name))


# ---- the daemon's side -------------------------------------------------------------

_MODES = {"new": ArchiveMode.NEW, "add": ArchiveMode.ADD, "replace": ArchiveMode.REPLACE}
#: What a failure after the objects left says: the receiving end is one transaction.
_AFTER = {
    "backup": "a backup is one transaction on the Backup HSM: `hsmclient partition archive "
              "list --slot {slot}` shows whether backup partition {partition!r} was written",
    "restore": "a restore is one transaction on the target: its partition holds every "
               "object of the backup or is as it was (C_FindObjects shows which)",
}  # fmt: skip


async def archive_command(backend: object, args: dict[str, Any]) -> dict[str, Any]:
    """The daemon's ``archive`` control command: the result, or ``{"error": WHY}``."""
    if not isinstance(backend, RemoteBackend):
        return {"error": "this hsmclient serves no remote HSM: nothing to archive"}
    app = await backend.connect()
    challenge = bytearray((args.get("password") or "").encode())
    op = args["op"]
    try:
        admin = await app.open_session(int(args["slot"]), True)
        if op == "list":
            return {"partitions": await archive_list(app, admin)}
        if op == "delete":
            await delete(app, admin, args["partition"])
            return {"deleted": args["partition"]}
        partition_slot = int(args["source_slot"] if op == "backup" else args["target_slot"])
        session = await app.open_session(partition_slot, True)
        await app.login(session, CKU.USER, challenge)
        mode = _MODES[args.get("mode") or ("new" if op == "backup" else "add")]
        try:
            if op == "backup":
                labels = tuple(args.get("objects") or ())
                row = await backup(app, session, admin, args["partition"], mode, labels)
            else:
                row = await restore(app, admin, session, args["partition"], mode)
        except Pkcs11Error as exc:
            if exc.rv in (CKR.DEVICE_REMOVED, CKR.DEVICE_ERROR, CKR.SESSION_HANDLE_INVALID):
                return {"error": f"{exc}; {_AFTER[op].format(**args)}"}
            raise
        return {op: row}
    except Pkcs11Error as exc:
        return {"error": str(exc)}
    finally:
        challenge[:] = bytes(len(challenge))
        await app.close()


# ---- the command line --------------------------------------------------------------


def add_archive_parser(actions: Any, common: Any) -> None:
    archive = actions.add_parser(
        "archive", help="back partitions up on a Backup HSM and restore them (LunaCM's "
        "partition archive); hsmclient relays the objects unread")  # fmt: skip
    steps = archive.add_subparsers(dest="archive", metavar="{backup,restore,list,delete}")
    steps.required = True
    up = steps.add_parser("backup", help="back a partition's objects up")
    down = steps.add_parser("restore", help="restore a backup partition into a partition")
    listing = steps.add_parser("list", help="the Backup HSM's backup partitions")
    gone = steps.add_parser("delete", help="delete a backup partition")
    for parser in (up, down, listing, gone):
        common(parser)
        parser.add_argument("--slot", "-slot", required=True, type=int, metavar="BACKUP",
                            help="the Backup HSM's admin slot (`hsmclient slot list`)")
    for parser in (up, down, gone):
        parser.add_argument("--partition", "-partition", required=True, metavar="NAME",
                            help="the backup partition's name")
    up.add_argument("--source-slot", "--sourceslot", "--slotsource", required=True, type=int,
                    metavar="S", help="the slot of the partition backed up")
    up.add_argument("--objects", "-objects", metavar="LABEL[,LABEL]",
                    help="only the objects of these labels (default: every token object)")
    down.add_argument("--target-slot", "--targetslot", "--slottarget", required=True,
                      type=int, metavar="T", help="the slot of the partition restored into")
    listing.add_argument("--json", action="store_true", help="the list as JSON")
    for parser, words in ((up, ("append", "replace")), (down, ("add", "replace"))):
        how = parser.add_mutually_exclusive_group()
        for word in words:
            how.add_argument(f"--{word}", f"-{word}", dest="mode", action="store_const",
                             const="replace" if word == "replace" else "add",
                             help="replace what it holds (one transaction)" if word == "replace"
                             else "keep what it holds, add what it lacks")  # fmt: skip
        given = parser.add_mutually_exclusive_group()
        given.add_argument("--password", "-password", metavar="CHALLENGE",
                           help="the partition's Crypto Officer challenge (prefer "
                           "--password-file or the prompt)")  # fmt: skip
        given.add_argument("--password-file", metavar="FILE",
                           help="a file holding the Crypto Officer's challenge (one line)")


def partition_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``partition clone`` or ``partition archive ...``."""
    if args.action != "archive":
        return clone_command_line(prog, home, args, out, err)
    op = args.archive
    request: dict[str, Any] = {"op": op, "slot": args.slot,
                               "partition": getattr(args, "partition", None)}  # fmt: skip
    if op in ("backup", "restore"):
        try:
            request["password"] = co_challenge(args)
        except ValueError as exc:
            err.write(f"{prog}: {exc}\n")
            return EXIT_ERROR
        request["mode"] = args.mode
        request["source_slot"] = getattr(args, "source_slot", None)
        request["target_slot"] = getattr(args, "target_slot", None)
        objects = getattr(args, "objects", None) or ""
        request["objects"] = [label for label in objects.split(",") if label]
    answer = ask_daemon(prog, home, "archive", request, timeout=600.0,
                        doing=f"partition archive {op}", err=err)
    if isinstance(answer, int):
        return answer
    out.write(_said(op, args, answer))
    return EXIT_OK


def _said(op: str, args: argparse.Namespace, answer: dict[str, Any]) -> str:
    if op == "list":
        rows = answer["partitions"]
        if args.json:
            return json.dumps(rows, indent=2) + "\n"
        if not rows:
            return f"No backup partitions on the Backup HSM of slot {args.slot}.\n"
        lines = [f"{'Name':<16} {'Serial':<14} {'Source':<14} {'Domain':<19} Objects"]
        lines += [f"{r['name']:<16} {r['serial']:<14} {r['source_serial']:<14} "
                  f"{r['domain']:<19} {r['objects']}" for r in rows]  # fmt: skip
        lines += [note for r in rows if (note := _limit_note(r))]
        return "\n".join(lines) + "\n"
    if op == "delete":
        return f"Backup partition {args.partition!r} deleted.\n"
    row = answer[op]
    if op == "backup":
        return (f"Backup partition {row['name']!r} (serial {row['serial']}, domain "
                f"{row['domain']}) holds {row['objects']} objects of slot "
                f"{args.source_slot}.\n")  # fmt: skip
    return (f"Backup partition {row['name']!r} ({row['objects']} objects) restored into slot "
            f"{args.target_slot} in one transaction.\n")  # fmt: skip


def _limit_note(row: dict[str, Any]) -> str:
    """What `archive list` says of a backup partition near or over what one restore carries."""
    held, limit = int(row["objects"]), MAX_ARCHIVE_OBJECTS
    if held > limit:
        return (f"Backup partition {row['name']!r} holds {held} objects, more than the {limit} "
                "one restore carries: a restore refuses it; back its source partition up "
                "anew with --replace.")  # fmt: skip
    if held >= NEAR_LIMIT * limit:
        return (f"Backup partition {row['name']!r} holds {held} of the {limit} objects one "
                "restore carries: a backup that would pass it is refused; use another "
                "backup partition (--partition OTHER) or --replace.")  # fmt: skip
    return ""
