"""``pedkey``: make, inspect, check, duplicate and erase PED key images.

Keys are normally imprinted through the PED while the HSM is initialised; ``pedkey`` is for
offline work and tests.  It never prints a secret, a share or a PIN.

Exit status: 0 success; 1 ``verify`` found a problem, ``list`` found damaged images, or an
``erase`` was not confirmed; 2 any error (one line on stderr naming the file and the
problem; no file changed) or a usage error.

``new`` writes on the blank keys already in DIR (in file-name order) like a PED writes on
the blank keys presented to it; with too few blanks it stops with an error unless
``--create`` is given, which makes the missing key files.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TextIO

from keys.colors import Color
from keys.errors import (
    BlankKey,
    InconsistentShares,
    InvalidSplit,
    KeyImageError,
    WrongImageColor,
)
from keys.fingerprint import keyset_fingerprint
from keys.image import IMAGE_SIZE, KeyHeader, KeyImage, load_image
from keys.keyring import Keyring, duplicate, erase, fingerprint_of, new_keyset
from keys.pin import pin_for_label, read_pin_file
from keys.shamir import MAX_SHARES, combine, wipe

PROG = "pedkey"


class _Refused(Exception):
    """A non-error 'no' (verify failed, erase not confirmed): exit 1."""


def _color(text: str) -> Color:
    try:
        return Color.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _split_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_SHARES:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_SHARES}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be 1 to 1000")
    return value


#: The word that confirms a destructive command, as Luna's shells ask for it (and pedhsm).
CONFIRM_WORD = "proceed"


def _version() -> str:
    """The installed project's version (``keys`` imports nothing of ours: not ped.cliutil)."""
    try:
        return f"{metadata.version('remote-ped')} (Remote PED)"
    except metadata.PackageNotFoundError:
        return "unknown (Remote PED)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Make, inspect, check, duplicate and erase PED key images "
        "(files standing in for PED keys). Never prints a secret or a PIN.",
        epilog="Exit status: 0 ok; 1 verify/list found a problem or erase was not confirmed; "
        "2 error (nothing changed).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "blank",
        help="create a pack of blank keys",
        description="Create COUNT new blank key files in DIR (made if missing).",
    )
    p.add_argument("--count", type=_count, default=1, help="how many blanks (1-1000, default 1)")
    p.add_argument("--dir", required=True, type=Path, help="key directory")

    p = sub.add_parser(
        "new",
        help="imprint a new keyset on blank keys",
        description="Create a keyset (a fresh random secret, or one reused from existing "
        "keys) and write its N shares on the blank keys in DIR. Prints the files written, "
        "the keyset id and the keyset fingerprint.",
    )
    p.add_argument(
        "--color",
        "--colour",
        required=True,
        type=_color,
        help="blue, red, black, gray, white, orange or purple",
    )
    p.add_argument("--label", required=True, help="key label, e.g. 'HSM SO' (1-64 bytes)")
    p.add_argument("--m", type=_split_count, default=None, help="shares needed (default 1)")
    p.add_argument("--n", type=_split_count, default=None, help="shares made (default M)")
    p.add_argument(
        "--pin-file",
        type=Path,
        help="protect with a PED PIN: a file with 'LABEL = DIGITS' lines (the line "
        "for --label is used) or one line of 4-48 digits. The PIN is not stored.",
    )
    p.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="reuse the keyset of these keys (at least M of them): same secret, keyset "
        "id and PED PIN setting (give --pin-file with the same PIN when it has one), e.g. to "
        "give another HSM the same key",
    )
    p.add_argument(
        "--create", action="store_true", help="create new key files when DIR has too few blanks"
    )
    p.add_argument("--dir", required=True, type=Path, help="key directory")

    p = sub.add_parser(
        "list",
        help="table of the key images in a directory",
        description="List the key images in DIR: file, colour, label, keyset "
        "id, share i of N (M needed), PED PIN, blank or damaged.",
    )
    p.add_argument("dir", type=Path, metavar="DIR")

    p = sub.add_parser(
        "show",
        help="print one image's header (never the secret)",
        description="Check FILE and print its header. Never prints the secret.",
    )
    p.add_argument("file", type=Path, metavar="FILE")

    p = sub.add_parser(
        "verify",
        help="check images and rebuild keysets",
        description="Check each image's integrity; for every keyset with at least M shares "
        "among the files, check that they rebuild one secret and print the keyset "
        "fingerprint. Exit 0 when all is good, 1 when not.",
    )
    p.add_argument("files", type=Path, nargs="+", metavar="FILE")

    p = sub.add_parser(
        "duplicate",
        help="copy a key onto a blank key",
        description="Copy the key FILE byte for byte onto the blank key "
        "BLANK_FILE. The HSM cannot tell a duplicate from the original.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--to", required=True, type=Path, metavar="BLANK_FILE")

    p = sub.add_parser(
        "erase",
        help="turn a key back into a blank key",
        description="Erase the key FILE back to blank after a confirmation. "
        "The secret on it is gone unless other copies or shares exist.",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--yes", "-y", "--force", dest="yes", action="store_true",
                   help="do not ask for confirmation")
    return parser


# --- commands ------------------------------------------------------------------------------


def _cmd_blank(args: argparse.Namespace, out: TextIO) -> None:
    paths = Keyring(args.dir).add_blanks(args.count)
    for path in paths:
        print(path, file=out)
    print(f"{len(paths)} blank key(s) created in {args.dir}", file=out)


def _read_reused(files: Sequence[Path], color: Color) -> tuple[bytearray, KeyHeader]:
    images = [load_image(f) for f in files]
    try:
        for image in images:
            if image.is_blank:
                raise BlankKey("is a blank key; --reuse needs imprinted keys", image.path)
            if image.color != color:
                assert image.color is not None
                raise WrongImageColor(
                    f"is {image.color.a_label} key, not {color.label}; a reused "
                    "keyset keeps its colour",
                    image.path,
                )
        shares = [image.share() for image in images]
        try:
            secret = combine(shares)
        finally:
            for share in shares:
                share.wipe()
        return secret, images[0].header
    finally:
        for image in images:
            image.wipe()


def _cmd_new(args: argparse.Namespace, out: TextIO) -> None:
    if args.n is not None and args.m is None and args.n > 1:
        raise InvalidSplit(
            f"--n {args.n} needs --m: how many of the {args.n} keys are needed to log in"
        )
    m = args.m or 1
    n = args.n or m
    if m > n:
        raise InvalidSplit(f"--m {m} is more than --n {n}; M of N needs M <= N")
    pin_protected = False
    if args.pin_file is not None:
        pin_for_label(read_pin_file(args.pin_file), args.label, args.pin_file)  # validates
        pin_protected = True
    secret: bytearray | None = None
    keyset_id = None
    if args.reuse:
        secret, reused = _read_reused(args.reuse, args.color)
        keyset_id = reused.keyset_id
        if reused.pin_protected != pin_protected:
            wipe(secret)
            need = "needs --pin-file with its PIN" if reused.pin_protected else "has no PED PIN"
            raise KeyImageError(
                f"the reused keyset {need}; the HSM must receive the same secret from the new "
                "keys, so the PED PIN setting is kept",
                args.reuse[0],
            )
    try:
        images = new_keyset(
            args.color, args.label, m, n, pin_protected, secret, keyset_id=keyset_id
        )
        fingerprint = fingerprint_of(images[:m])
    finally:
        if secret is not None:
            wipe(secret)
    try:
        paths = Keyring(args.dir).imprint(images, create=args.create)
    finally:
        for image in images:
            image.wipe()
    for path, image in zip(paths, images, strict=True):
        print(f"{path}: {image.header.describe()}", file=out)
    print(f"keyset id: {images[0].header.keyset_hex}", file=out)
    print(f"fingerprint: {fingerprint}", file=out)
    if pin_protected:
        print(
            "PED PIN: yes (the PIN is not stored anywhere; without it the keys are useless)",
            file=out,
        )


def _share_text(h: KeyHeader) -> str:
    return f"{h.index} of {h.n} ({h.m} needed)"


def _cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    entries = Keyring(args.dir).entries()
    rows = [("FILE", "COLOUR", "LABEL", "KEYSET ID", "SHARE", "PIN", "STATE")]
    for e in entries:
        h = e.header
        if h is None:
            rows.append((e.path.name, "-", "-", "-", "-", "-", "DAMAGED"))
        elif h.blank:
            rows.append((e.path.name, "-", "-", "-", "-", "-", "blank"))
        else:
            assert h.color is not None
            rows.append(
                (
                    e.path.name,
                    h.color.label,
                    h.label,
                    h.keyset_hex,
                    _share_text(h),
                    "yes" if h.pin_protected else "no",
                    "imprinted",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    blanks = sum(1 for e in entries if e.blank)
    damaged = [e for e in entries if e.error is not None]
    print(
        f"{len(entries)} image(s): {len(entries) - blanks - len(damaged)} imprinted, "
        f"{blanks} blank, {len(damaged)} damaged",
        file=out,
    )
    for e in damaged:
        print(f"{PROG}: {e.error}", file=err)
    if damaged:
        raise _Refused


def _cmd_show(args: argparse.Namespace, out: TextIO) -> None:
    image = load_image(args.file)
    image.wipe()
    h = image.header
    lines = [("file", str(args.file)), ("state", "blank" if h.blank else "imprinted")]
    if not h.blank:
        assert h.color is not None
        lines += [
            ("colour", f"{h.color.label} ({h.color.role})"),
            ("label", h.label),
            ("keyset id", h.keyset_hex),
            ("share", "1 of 1 (not split)" if h.n == 1 else _share_text(h)),
            ("PED PIN", "yes" if h.pin_protected else "no"),
        ]
    lines += [
        ("created", h.created_iso),
        ("format", f"version {h.version}, {IMAGE_SIZE} bytes, SHA-256 intact"),
    ]
    mode = stat.S_IMODE(os.stat(args.file).st_mode)
    note = "" if not mode & 0o077 else "  (warning: others can read this key; chmod 600 it)"
    lines.append(("permissions", f"{mode:04o}{note}"))
    for name, value in lines:
        print(f"{name + ':':<13}{value}", file=out)


def _cmd_verify(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    good = True
    images: list[KeyImage] = []
    try:
        for file in args.files:
            try:
                image = load_image(file)
            except KeyImageError as exc:
                print(f"{PROG}: FAIL {exc}", file=err)
                good = False
                continue
            images.append(image)
            print(f"ok   {file}: {image.header.describe()}", file=out)
        # One group per split: a reused keyset has several splits, each checked alone.
        groups: dict[tuple[bytes, bytes], list[KeyImage]] = {}
        for image in images:
            h = image.header
            if not h.blank:
                assert h.keyset_id is not None and h.split_id is not None
                groups.setdefault((h.keyset_id, h.split_id), []).append(image)
        for (keyset_id, _split), members in groups.items():
            good &= _verify_keyset(keyset_id, members, out, err)
    finally:
        for image in images:
            image.wipe()
    if not good:
        raise _Refused


def _verify_keyset(keyset_id: bytes, members: list[KeyImage], out: TextIO, err: TextIO) -> bool:
    first = members[0].header
    assert first.color is not None
    name = f"keyset {keyset_id.hex()} ({first.color.label} {first.label!r}, {first.m} of {first.n})"
    distinct: list[KeyImage] = []
    for image in members:
        h = image.header
        if (h.color, h.label, h.m, h.n, h.pin_protected) != (
            first.color,
            first.label,
            first.m,
            first.n,
            first.pin_protected,
        ):
            print(
                f"{PROG}: FAIL {image.path}: its header disagrees with {members[0].path} of the "
                "same keyset (colour, label, M, N or PIN flag)",
                file=err,
            )
            return False
        twin = next((d for d in distinct if d.header.index == h.index), None)
        if twin is None:
            distinct.append(image)
        elif twin.same_share(image):
            print(f"ok   {image.path}: a duplicate of {twin.path}", file=out)
        else:
            print(
                f"{PROG}: FAIL {image.path}: share {h.index} differs from {twin.path}'s share "
                f"{h.index} of the same keyset; one of them is damaged",
                file=err,
            )
            return False
    if len(distinct) < first.m:
        print(
            f"info {name}: {len(distinct)} of {first.m} needed shares given; not enough to "
            "rebuild (integrity checked only)",
            file=out,
        )
        return True
    shares = [image.share() for image in distinct]
    try:
        secret = combine(shares)
    except InconsistentShares as exc:
        print(f"{PROG}: FAIL {name}: {exc}", file=err)
        return False
    finally:
        for share in shares:
            share.wipe()
    try:
        fingerprint = keyset_fingerprint(secret, keyset_id)
    finally:
        wipe(secret)
    pin = "; PED PIN not checkable offline, by design" if first.pin_protected else ""
    print(
        f"ok   {name}: rebuilt from {len(distinct)} share(s), fingerprint {fingerprint}{pin}",
        file=out,
    )
    return True


def _cmd_duplicate(args: argparse.Namespace, out: TextIO) -> None:
    header = duplicate(args.file, args.to)
    print(
        f"{args.to}: now a duplicate of {args.file} ({header.describe()}, keyset "
        f"{header.keyset_hex})",
        file=out,
    )


def _cmd_erase(args: argparse.Namespace, out: TextIO, inp: TextIO) -> None:
    image = load_image(args.file)
    image.wipe()
    h = image.header
    if h.blank:
        print(f"{args.file}: already blank", file=out)
        return
    if not args.yes:
        print(
            f"Erase {args.file} ({h.describe()}, keyset {h.keyset_hex})? The secret on it is "
            f"lost unless other copies exist. Type '{CONFIRM_WORD}' to erase: ",
            end="",
            file=out,
        )
        out.flush()
        answer = inp.readline().strip().lower()
        if answer != CONFIRM_WORD:
            print(f"{args.file}: not erased", file=out)
            raise _Refused
    erase(args.file)
    print(f"{args.file}: erased (blank)", file=out)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    inp = stdin or sys.stdin
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        match args.command:
            case "blank":
                _cmd_blank(args, out)
            case "new":
                _cmd_new(args, out)
            case "list":
                _cmd_list(args, out, err)
            case "show":
                _cmd_show(args, out)
            case "verify":
                _cmd_verify(args, out, err)
            case "duplicate":
                _cmd_duplicate(args, out)
            case "erase":
                _cmd_erase(args, out, inp)
    except _Refused:
        return 1
    except KeyImageError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 2
    except OSError as exc:  # not expected: key operations map OSError to KeyImageError
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: {where}{exc.strerror or exc}", file=err)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no key was left half written", file=err)
        return 130
    return 0


__all__ = ["build_parser", "main"]
