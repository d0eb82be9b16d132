"""hsmclient's ``partition clone``: the relay of a clone between two slots' HSMs, unread.

    hsmclient partition clone --source-slot S --objects LABEL[,LABEL] --slot TARGET

A clone of single objects (issue 17: ``hsmclient partition clone``) runs end to end
between the two HSMs in a channel keyed by their partitions' cloning domain
(docs/protocol/cloning.md); hsmclient only opens each end (``CLONE_OPEN``) and hands each
HSM what the other answered (``CLONE_FRAME``, docs/protocol/client.md; `relay`, also
``partition archive``'s) until the source answers nothing: the objects go in batches that
each fit one answer, the target answering nothing until the last.  A domain that differs
is refused by the target at the handshake and reported by the source; the target has
created nothing.

The command asks the running daemon (the slot ids are its); the daemon logs in as each
partition's Crypto Officer with the challenge given (``--password``, else asked for;
``--target-password`` when the target's differs), over its owner-only control socket.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from hsmclient.remote import RemoteApplication, RemoteBackend
from hsmclient.settings import Layout
from ped.daemon.control import ControlError, ControlUnavailable, control_request_sync
from ped.daemon.exits import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK
from ped.ntls import messages as m
from ped.pkcs11.constants import CKA, CKR, CKU
from ped.pkcs11.token import Attribute, Pkcs11Error
from ped.tls.pins import Program

#: Exchanges of one clone beyond one per object (a clone of one batch takes two; more
#: means a peer misbehaves).
MAX_HOPS = 4


async def relay_clone(
    app: RemoteApplication,
    source: int,
    target: int,
    handles: Sequence[int],
    *,
    tap: Callable[[bytes], None] | None = None,
) -> int:
    """Clone the objects *handles* of *source*'s partition into *target*'s; how many.

    *source* and *target* are sessions of *app* with each partition's Crypto Officer
    logged in.  *tap* sees every opaque hop (tests check nothing in it is a key).
    """
    source_serial, target_serial = app.session_serial(source), app.session_serial(target)
    await app.clone_call(target, lambda rid, s: m.CloneOpen(
        rid, s, m.CloneRole.TARGET, source_serial, ()))  # fmt: skip
    frames = await app.clone_call(source, lambda rid, s: m.CloneOpen(
        rid, s, m.CloneRole.SOURCE, target_serial, tuple(handles)))  # fmt: skip
    await relay(app, source, target, frames, max_hops=len(handles) + MAX_HOPS, tap=tap)
    return len(handles)


async def relay(
    app: RemoteApplication,
    source: int,
    target: int,
    frames: bytes,
    *,
    max_hops: int,
    tap: Callable[[bytes], None] | None = None,
) -> None:
    """Relay an open clone from the source's first *frames* until the source is done.

    The target's answer goes to the source; an empty one (the target is still receiving)
    asks the source for its next batch of objects.  Each batch holds at least one object,
    so *max_hops* (the objects + `MAX_HOPS`) bounds a peer that never ends.
    """
    for _hop in range(max_hops):
        if not frames:
            return
        if tap is not None:
            tap(frames)
        answer = await app.clone_call(target, _relay(frames))
        if answer and tap is not None:
            tap(answer)
        frames = await app.clone_call(source, _relay(answer))
    raise Pkcs11Error(CKR.GENERAL_ERROR, f"the clone did not end after {max_hops} exchanges")


def _relay(frames: bytes) -> Callable[[int, int], m.Request]:
    return lambda rid, session: m.CloneFrame(rid, session, frames)


async def objects_by_label(app: RemoteApplication, session: int, labels: Sequence[str]
                           ) -> list[int]:  # fmt: skip
    """The handles of every object carrying one of *labels*; a label matching none fails."""
    handles: list[int] = []
    for label in labels:
        found = await app.find_objects(session, [Attribute(CKA.LABEL, label.encode())])
        if not found:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID,
                              f"no object labelled {label!r} on the source slot")  # fmt: skip
        handles.extend(found)
    return handles


# ---- the daemon's side -------------------------------------------------------------


async def clone_command(backend: object, args: dict[str, Any]) -> dict[str, Any]:
    """The daemon's ``clone`` control command: ``{"cloned": N}`` or ``{"error": WHY}``."""
    if not isinstance(backend, RemoteBackend):
        return {"error": "this hsmclient serves no remote HSM: nothing to clone"}
    app = await backend.connect()
    challenges = [bytearray(args["password"].encode()),
                  bytearray((args.get("target_password") or args["password"]).encode())]
    try:
        sessions = []
        for slot, challenge in zip((args["source_slot"], args["slot"]), challenges, strict=True):
            session = await app.open_session(int(slot), True)
            await app.login(session, CKU.USER, challenge)
            sessions.append(session)
        handles = await objects_by_label(app, sessions[0], args["objects"])
        return {"cloned": await relay_clone(app, sessions[0], sessions[1], handles)}
    except Pkcs11Error as exc:
        return {"error": str(exc)}
    finally:
        for challenge in challenges:
            challenge[:] = bytes(len(challenge))
        await app.close()


# ---- the command line --------------------------------------------------------------


def add_partition_parser(commands: Any, common: Any) -> Any:
    """``partition clone``; the subparsers, for ``partition archive``."""
    partition = commands.add_parser("partition", help="partitions seen through the slots")
    actions = partition.add_subparsers(dest="action", metavar="{clone,archive}")
    clone = actions.add_parser(
        "clone", help="clone objects from one slot's partition into another's, HSM to HSM "
        "(same cloning domain); hsmclient relays them unread")  # fmt: skip
    common(clone)
    clone.add_argument("--source-slot", "--sourceslot", "-sourceslot", required=True, type=int,
                       metavar="S",
                       help="the slot holding the objects")  # fmt: skip
    clone.add_argument("--objects", "-objects", required=True, metavar="LABEL[,LABEL]",
                       help="labels of the objects to clone (every object of each label)")
    clone.add_argument("--slot", "-slot", required=True, type=int, metavar="TARGET",
                       help="the slot to clone into")
    given = clone.add_mutually_exclusive_group()
    given.add_argument("--password", "-password", metavar="CHALLENGE",
                       help="the Crypto Officer's challenge (LunaCM's spelling; other users "
                       "of this host can read a command line: prefer --password-file or "
                       "the prompt you get when neither is given)")  # fmt: skip
    given.add_argument("--password-file", metavar="FILE",
                       help="a file holding the Crypto Officer's challenge (one line)")
    target = clone.add_mutually_exclusive_group()
    target.add_argument("--target-password", metavar="CHALLENGE",
                        help="the target Crypto Officer's challenge, if it differs")
    target.add_argument("--target-password-file", metavar="FILE",
                        help="a file holding the target Crypto Officer's challenge")
    return actions


#: A challenge secret has at most 256 bytes (hsm.roles.MAX_CHALLENGE); a line end may follow.
MAX_CHALLENGE_FILE = 258


def read_challenge_file(path: str) -> str:
    """The challenge in *path* (its line end dropped); a clear error names what is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CHALLENGE_FILE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the challenge file {path}: {exc.strerror}") from None
    if len(data) > MAX_CHALLENGE_FILE:
        raise ValueError(f"the challenge file {path} holds more than a challenge (256 bytes)")
    text = data.rstrip(b"\r\n")
    if not text:
        raise ValueError(f"the challenge file {path} is empty")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the challenge file {path} is not UTF-8 text") from None


def co_challenge(args: argparse.Namespace) -> str:
    """The Crypto Officer's challenge: ``--password``, ``--password-file``, else asked for
    (raises ValueError for a file that cannot serve)."""
    return (args.password
            or (read_challenge_file(args.password_file) if args.password_file else None)
            or getpass.getpass("Crypto Officer challenge: "))  # fmt: skip


def ask_daemon(
    prog: Program, home: Path, command: str, request: dict[str, Any], *, timeout: float,
    doing: str, err: TextIO,
) -> dict[str, Any] | int:
    """The running daemon's answer to *command*; or, once *err* says why, the exit code
    (not running, a control error, or the daemon's own refusal of *doing*)."""
    try:
        answer = control_request_sync(Layout(home).control, command, request,
                                      timeout=timeout, what="hsmclient")  # fmt: skip
    except ControlUnavailable:
        err.write(f"{prog} is not running (home {home}); start it with: {prog} mode start"
                  f" --home {home}\n")  # fmt: skip
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    if answer.get("error"):
        err.write(f"{prog}: {doing} failed: {answer['error']}\n")
        return EXIT_ERROR
    return answer


def partition_command(
    prog: Program, home: Path, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    """``partition clone``: ask the running daemon to relay the clone."""
    try:
        password = co_challenge(args)
        target_password = args.target_password or (
            read_challenge_file(args.target_password_file) if args.target_password_file else None
        )
    except ValueError as exc:
        err.write(f"{prog}: {exc}\n")
        return EXIT_ERROR
    request = {
        "source_slot": args.source_slot, "slot": args.slot, "password": password,
        "target_password": target_password,
        "objects": [label for label in args.objects.split(",") if label],
    }  # fmt: skip
    answer = ask_daemon(prog, home, "clone", request, timeout=120.0,
                        doing="partition clone", err=err)
    if isinstance(answer, int):
        return answer
    out.write(f"{answer['cloned']} objects cloned from slot {args.source_slot} to slot "
              f"{args.slot}\n")  # fmt: skip
    return EXIT_OK
