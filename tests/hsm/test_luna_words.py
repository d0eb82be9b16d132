"""LunaSH habits in pedhsm's shell: case-insensitive unique prefixes, partition resetPw,
and the current partition (`hsm.lunawords`, `hsm.current`, `hsm.cli`)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hsm import cli, control, shellparser
from hsm.current import clear_current, current_file, read_current, write_current
from hsm.lunawords import AmbiguousWord, match, resolve_words
from ped.cliutil import normalize_luna_argv
from tests.hsm.rig import Rig

# The seeds' transcripts (/work/shared/seeds) and the issue's own examples.
LUNA_SPELLINGS = {
    "hsm showP": ["hsm", "showpolicies"],
    "hsm showPolicies": ["hsm", "showpolicies"],
    "hsm sh": ["hsm", "show"],
    "hsm login": ["hsm", "login"],
    "hsm changePolicy -policy 15 -value 1": ["hsm", "changepolicy", "--policy", "15",
                                             "--value", "1"],
    "partition showPolicies -p example": ["partition", "showpolicies", "--partition", "example"],
    "partition sh -p example": ["partition", "show", "--partition", "example"],
    "partition resetPw -p partition-name": ["partition", "resetpw", "--partition",
                                            "partition-name"],
    "PAR SH -Partition example": ["partition", "show", "--partition", "example"],
    "role login -name co": ["role", "login", "--name", "co"],
    "role login -p p1 -n co": ["role", "login", "--partition", "p1", "--name", "co"],
    "hsm ped connect -ip 10.0.0.1 -port 1503": ["hsm", "ped", "connect", "--ip", "10.0.0.1",
                                                "--port", "1503"],
    "hsm changepolicy --policy 15 --value -1": ["hsm", "changepolicy", "--policy", "15",
                                                "--value", "-1"],
    "hsm ped timeout set -type=pedk -seconds 300": ["hsm", "ped", "timeout", "set",
                                                    "--type=pedk", "--seconds", "300"],
}


def _resolve(line: str) -> list[str]:
    parser = shellparser.build_parser()
    return resolve_words(parser, normalize_luna_argv(line.split(), cli.COMMAND_WORDS))


@pytest.mark.parametrize("line", sorted(LUNA_SPELLINGS))
def test_luna_spellings_resolve_to_the_full_commands(line: str) -> None:
    assert _resolve(line) == LUNA_SPELLINGS[line]
    shellparser.build_parser().parse_args(LUNA_SPELLINGS[line])  # and argparse takes them


def test_every_full_spelling_is_left_as_it_is() -> None:
    for words in LUNA_SPELLINGS.values():
        assert _resolve(" ".join(words)) == words


def test_a_prefix_with_several_candidates_lists_them() -> None:
    with pytest.raises(AmbiguousWord, match="'log': it could be login, logout"):
        _resolve("role log -name co")
    with pytest.raises(AmbiguousWord, match="'-p': it could be --peer, --port"):
        _resolve("hsm ped connect -ip a -p 1503")
    # the shortest wins only when every candidate begins with it
    assert match("s", ["show", "showpolicies"], what="command") == "show"
    with pytest.raises(AmbiguousWord):
        match("s", ["set", "show"], what="command")
    assert match("X", ["show"], what="command") is None


@pytest.mark.parametrize(
    "argv",
    [["hsm", "showP"], ["hsm", "sh"], ["hsm", "changePolicy", "-policy", "15", "-value", "1"],
     ["partition", "showPolicies", "-p", "x"], ["partition", "sh", "-p", "x"],
     ["partition", "resetPw", "-p", "x"]],
)
def test_the_issues_commands_reach_the_hsm(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # They used to fail at the command line (2); now they ask the HSM, which is not running.
    code = cli.main(["--home", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_DOWN, err


def test_an_ambiguous_command_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--home", str(tmp_path), "role", "lo", "-name", "co"]) == cli.EXIT_USAGE
    assert "ambiguous command 'lo': it could be login, logout" in capsys.readouterr().err


def test_the_current_partition_file_is_owner_only_and_per_user(tmp_path: Path) -> None:
    assert read_current(tmp_path) is None
    write_current(tmp_path, "p1")
    path = current_file(tmp_path)
    assert path.name == f"current-partition.{os.getuid()}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_current(tmp_path) == "p1"
    write_current(tmp_path, "p2")
    assert read_current(tmp_path) == "p2"
    assert clear_current(tmp_path) and not clear_current(tmp_path)
    assert read_current(tmp_path) is None


def test_no_partition_and_no_current_one_says_how_to_choose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o700)
    assert cli.main(["--home", str(tmp_path), "role", "login", "-name", "co"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--partition is required" in err and "partition select" in err
    # partition create and delete always name their partition
    assert cli.main(["--home", str(tmp_path), "partition", "delete"]) == cli.EXIT_USAGE


def test_the_current_partition_fills_in_and_a_named_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path.chmod(0o700)
    sent: list[tuple[str, dict[str, object]]] = []

    def send(ns: object, command: str, args: dict[str, object]) -> int:
        sent.append((command, args))
        return cli.EXIT_OK

    monkeypatch.setattr(cli, "_send", send)
    write_current(tmp_path, "p1")
    home = ["--home", str(tmp_path)]
    assert cli.main([*home, "role", "login", "-name", "co"]) == 0
    assert cli.main([*home, "role", "login", "-name", "co", "-p", "p2"]) == 0
    assert cli.main([*home, "partition", "sh"]) == 0
    assert cli.main([*home, "object", "list"]) == 0
    assert cli.main([*home, "role", "logout"]) == 0  # all partitions, as before
    assert sent == [
        ("role.login", {"partition": "p1", "name": "co"}),
        ("role.login", {"partition": "p2", "name": "co"}),
        ("partition.show", {"name": "p1"}),
        ("object.list", {"partition": "p1"}),
        ("role.logout", {}),
    ]


async def test_partition_resetpw_resets_the_crypto_officer(rig: Rig) -> None:
    await rig.init_hsm()
    rig.hsm.admin.changepolicy(15, 1, force=True)
    await rig.init_hsm()
    await rig.init_partition("p1", with_cu=True)
    await rig.hsm.roles.login(rig.notify, "p1", "so", None)
    rig.ped.plan.append("p1-co-new")
    command = control.BY_NAME["partition.resetpw"]
    args = {"name": "p1", "challenge": b"new challenge".hex()}
    reply = await control.run(command, rig.hsm, args, rig.notify)
    assert "unlocked" in reply["text"] or "reset" in reply["text"]
    await rig.hsm.roles.login(rig.notify, "p1", "co", b"new challenge")
