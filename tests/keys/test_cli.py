"""`pedkey`: through the installed console script and in-process `main()`."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from keys.cli import main
from keys.colors import Color
from keys.image import KeyImage, load_image, write_image
from keys.keyring import Keyring, new_keyset
from keys.pin import secret_for_hsm
from keys.shamir import combine

PEDKEY = Path(sys.executable).with_name("pedkey")
PIN = "73914682"
COMMANDS = ["blank", "new", "list", "show", "verify", "duplicate", "erase"]


def run(*args: str | Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the real console script."""
    return subprocess.run(
        [str(PEDKEY), *map(str, args)], capture_output=True, text=True, input=stdin, timeout=60
    )


def call(*args: str | Path, stdin: str = "") -> tuple[int, str, str]:
    """Run main() in-process."""
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in args], stdout=out, stderr=err, stdin=io.StringIO(stdin))
    return code, out.getvalue(), err.getvalue()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def secret_forms(images: list[KeyImage]) -> list[str]:
    """Every way a share or the key secret could leak into text."""
    values = [bytes(img.share().value) for img in images if not img.is_blank]
    by_keyset: dict[bytes, list[KeyImage]] = {}
    for img in images:
        if not img.is_blank and img.keyset_id is not None:
            by_keyset.setdefault(img.keyset_id, []).append(img)
    for keyset_id, members in by_keyset.items():
        secret = combine([m.share() for m in members[: members[0].header.m]])
        values.append(bytes(secret))
        values.append(bytes(secret_for_hsm(secret, keyset_id, PIN)))
    forms = []
    for v in values:
        forms += [v.hex(), v.hex().upper(), base64.b64encode(v).decode(), repr(v)[2:-1]]
        forms.append(v.decode("latin-1"))
    return [*forms, PIN]


def assert_no_secret(texts: list[str], images: list[KeyImage]) -> None:
    joined = "\n".join(texts)
    for form in secret_forms(images):
        assert form not in joined


def test_script_is_installed() -> None:
    assert PEDKEY.exists(), "pip install -e . declares the pedkey console script"


def test_help_for_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout
    for command in COMMANDS:
        code, _, _ = call(command, "--help")
        assert code == 0
    result = run("new", "--help")
    assert result.returncode == 0 and "--pin-file" in result.stdout and "--m" in result.stdout


def test_usage_errors_exit_2() -> None:
    assert run().returncode == 2
    result = run("new", "--color", "pink", "--label", "x", "--dir", "d")
    assert result.returncode == 2 and "unknown PED key colour 'pink'" in result.stderr
    assert run("new", "--color", "blue", "--label", "x", "--m", "17", "--dir", "d").returncode == 2


def test_full_session_through_the_console_script(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    pins = tmp_path / "pins.txt"
    pins.write_text(f"# PINs\nCO = {PIN}\n")
    outputs: list[str] = []

    def ok(*args: str | Path, stdin: str = "") -> str:
        result = run(*args, stdin=stdin)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        return result.stdout

    out = ok("blank", "--count", "5", "--dir", keys)
    assert "5 blank key(s) created" in out
    out = ok(
        "new",
        "--color",
        "black",
        "--label",
        "CO",
        "--m",
        "2",
        "--n",
        "3",
        "--pin-file",
        pins,
        "--dir",
        keys,
    )
    assert "key-001.pedkey: black key 'CO', share 1 of 3 (2 needed), PED PIN" in out
    keyset = out.split("keyset id: ")[1].split()[0]
    fingerprint = out.split("fingerprint: ")[1].split()[0]
    assert len(keyset) == 32 and len(fingerprint) == 19

    out = ok("list", keys)
    lines = out.splitlines()
    assert lines[0].split() == ["FILE", "COLOUR", "LABEL", "KEYSET", "ID", "SHARE", "PIN", "STATE"]
    assert f"key-002.pedkey  black   CO     {keyset}  2 of 3 (2 needed)  yes  imprinted" in out
    assert "key-005.pedkey" in out and "blank" in lines[5]
    assert lines[-1] == "5 image(s): 3 imprinted, 2 blank, 0 damaged"

    out = ok("show", keys / "key-003.pedkey")
    assert "colour:      black (Crypto Officer)" in out
    assert "share:       3 of 3 (2 needed)" in out
    assert "PED PIN:     yes" in out and "permissions: 0600" in out
    assert f"keyset id:   {keyset}" in out

    out = ok("duplicate", keys / "key-001.pedkey", "--to", keys / "key-004.pedkey")
    assert (keys / "key-004.pedkey").read_bytes() == (keys / "key-001.pedkey").read_bytes()

    out = ok("verify", *sorted(keys.iterdir()))
    assert "key-004.pedkey: a duplicate of" in out
    assert f"rebuilt from 3 share(s), fingerprint {fingerprint}" in out

    out = ok("verify", keys / "key-001.pedkey")
    assert "1 of 2 needed shares given" in out

    out = ok("erase", keys / "key-004.pedkey", stdin="proceed\n")
    assert "erased" in out and load_image(keys / "key-004.pedkey").is_blank

    images = [load_image(p) for p in sorted(keys.iterdir())]
    assert_no_secret(outputs, images)
    for image in images:
        assert_no_secret([repr(image), str(image), repr(image.header)], images)


def test_new_without_enough_blanks(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    Keyring(keys).add_blanks(1)
    before = snapshot(keys)
    code, out, err = call(
        "new", "--color", "blue", "--label", "SO", "--m", "2", "--n", "2", "--dir", keys
    )
    assert code == 2 and out == ""
    assert err.strip() == (
        f"pedkey: {keys}: 1 blank key(s) here, 2 needed; add blanks with "
        f"'pedkey blank --count 1 --dir {keys}'"
    )
    assert snapshot(keys) == before
    code, out, _ = call(
        "new", "--color", "blue", "--label", "SO", "--m", "2", "--n", "2", "--dir", keys, "--create"
    )
    assert code == 0 and "key-002.pedkey" in out


def test_new_n_without_m_is_refused(tmp_path: Path) -> None:
    code, _, err = call("new", "--color", "blue", "--label", "SO", "--n", "3", "--dir", tmp_path)
    assert code == 2 and "--n 3 needs --m" in err
    code, _, err = call(
        "new", "--color", "blue", "--label", "SO", "--m", "3", "--n", "2", "--dir", tmp_path
    )
    assert code == 2 and "M <= N" in err


def test_new_with_a_pin_file_lacking_the_label(tmp_path: Path) -> None:
    Keyring(tmp_path).add_blanks(1)
    pins = tmp_path / "pins"
    pins.write_text("SO = 1234\n")
    before = snapshot(tmp_path)
    code, _, err = call(
        "new", "--color", "black", "--label", "CO", "--pin-file", pins, "--dir", tmp_path
    )
    assert code == 2
    assert err.strip() == f"pedkey: {pins}: has no PIN for label 'CO'; add a line 'CO = DIGITS'"
    assert snapshot(tmp_path) == before


def test_reuse_keeps_secret_and_refuses_wrong_colour(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(4)
    first = ring.imprint(new_keyset(Color.BLUE, "SO", 1, 1))[0]
    before = snapshot(tmp_path)
    code, _, err = call(
        "new", "--color", "black", "--label", "CO", "--reuse", first, "--dir", tmp_path
    )
    assert code == 2 and f"{first}: is a blue key, not black" in err
    assert snapshot(tmp_path) == before
    code, out, _ = call(
        "new",
        "--color",
        "blue",
        "--label",
        "SO",
        "--m",
        "2",
        "--n",
        "3",
        "--reuse",
        first,
        "--dir",
        tmp_path,
    )
    assert code == 0
    code, verify_out, _ = call("verify", *ring.paths())
    assert code == 0
    fingerprints = {
        line.split("fingerprint ")[1].split(";")[0].strip()
        for line in verify_out.splitlines()
        if "fingerprint" in line
    }
    assert len(fingerprints) == 1 and out.split("fingerprint: ")[1].strip() in fingerprints


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("missing", "no such key image file"),
        ("truncate", "only 100 of 176 bytes"),
        ("tamper", "integrity check failed (SHA-256 mismatch)"),
        ("garbage", "not a PED key image"),
        ("empty", "the file is empty"),
    ],
)
@pytest.mark.parametrize("command", ["show", "duplicate", "erase"])
def test_damaged_files_one_line_exit_2_nothing_changed(
    tmp_path: Path, damage: str, problem: str, command: str
) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(2)
    target = ring.imprint(new_keyset(Color.BLACK, "CO"))[0]
    data = target.read_bytes()
    if damage == "missing":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(data[:100])
    elif damage == "tamper":
        target.write_bytes(data[:50] + bytes([data[50] ^ 4]) + data[51:])
    elif damage == "garbage":
        target.write_text("this is not a key\n" * 10)
    else:
        target.write_bytes(b"")
    before = snapshot(tmp_path)
    args = {
        "show": ["show", target],
        "duplicate": ["duplicate", target, "--to", ring.blanks()[0]],
        "erase": ["erase", "--yes", target],
    }[command]
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"pedkey: {target}: ")
    assert problem in result.stderr
    assert snapshot(tmp_path) == before


def test_blank_where_a_key_is_needed(tmp_path: Path) -> None:
    a, b = Keyring(tmp_path).add_blanks(2)
    code, _, err = call("duplicate", a, "--to", b)
    assert code == 2 and err.strip() == (
        f"pedkey: {a}: is a blank key; there is nothing to duplicate"
    )
    code, out, _ = call("show", a)
    assert code == 0 and "state:       blank" in out


def test_duplicate_onto_a_key_is_refused(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(2)
    a, b = ring.imprint(new_keyset(Color.BLUE, "SO", 2, 2))
    before = snapshot(tmp_path)
    code, _, err = call("duplicate", a, "--to", b)
    assert code == 2 and f"{b}: holds blue key 'SO'" in err and "erase it first" in err
    assert snapshot(tmp_path) == before


def test_erase_asks_first(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(1)
    (path,) = ring.imprint(new_keyset(Color.WHITE, "Auditor"))
    before = path.read_bytes()
    for answer in ("", "no\n", "n\n", "y\n", "yes\n"):  # one word, Luna's: proceed
        code, out, _ = call("erase", path, stdin=answer)
        assert code == 1 and "Type 'proceed' to erase" in out and "not erased" in out
        assert path.read_bytes() == before
    code, out, _ = call("erase", path, stdin="Proceed\n")
    assert code == 0 and load_image(path).is_blank
    code, out, _ = call("erase", path)
    assert code == 0 and "already blank" in out


def test_verify_reports_bad_files_and_exits_1(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(4)
    paths = ring.imprint(new_keyset(Color.BLACK, "CO", 2, 3))
    data = bytearray(paths[1].read_bytes())
    data[120] ^= 1
    paths[1].write_bytes(bytes(data))
    result = run("verify", *paths)
    assert result.returncode == 1
    assert f"pedkey: FAIL {paths[1]}: integrity check failed" in result.stderr
    assert "rebuilt from 2 share(s)" in result.stdout  # the two good ones still rebuild
    result = run("verify", tmp_path / "nope.pedkey")
    assert result.returncode == 1 and "no such key image file" in result.stderr


def test_verify_catches_a_forged_share_with_a_valid_digest(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(3)
    paths = ring.imprint(new_keyset(Color.BLACK, "CO", 2, 3))
    data = bytearray(paths[2].read_bytes())
    data[115] ^= 1
    data[144:] = hashlib.sha256(data[:144]).digest()
    paths[2].write_bytes(bytes(data))
    code, _, err = call("verify", *paths)
    assert code == 1 and "does not agree with the other shares" in err


def test_verify_flags_same_index_different_share(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    ring.add_blanks(3)
    a, _b = ring.imprint(new_keyset(Color.BLACK, "CO", 2, 2))
    forged = KeyImage(load_image(a).header, bytearray(32))
    write_image(tmp_path / "forged.pedkey", forged)
    code, _, err = call("verify", a, tmp_path / "forged.pedkey")
    assert code == 1 and "differs from" in err


def test_list_marks_damaged_files_and_exits_1(tmp_path: Path) -> None:
    ring = Keyring(tmp_path)
    _a, b = ring.add_blanks(2)
    b.write_bytes(b"\x89PEDKEY\n\x01")
    code, out, err = call("list", tmp_path)
    assert code == 1
    assert "key-002.pedkey  -       -      -          -      -    DAMAGED" in out
    assert (
        err.strip() == f"pedkey: {b}: only 9 of 176 bytes; the copy was interrupted or the "
        "file is damaged"
    )
    code, _, err = call("list", tmp_path / "none")
    assert code == 2 and "no such key directory" in err


def test_show_warns_about_loose_permissions(tmp_path: Path) -> None:
    (path,) = Keyring(tmp_path).add_blanks(1)
    path.chmod(0o644)
    code, out, _ = call("show", path)
    assert code == 0 and "0644  (warning: others can read this key; chmod 600 it)" in out
