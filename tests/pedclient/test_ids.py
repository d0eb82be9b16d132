"""pedclient's PED id map: the rules of each command, its file, the command lines, the lookup."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
import trio

from ped.daemon.control import ControlError
from pedclient.cli import main
from pedclient.idcommands import LOOKUP_COMMAND, lookup_command
from pedclient.ids import PedAddress, PedIdError, PedIdMap, PedIdStore, check_host


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


A = PedAddress("10.0.0.5", 1503)
B = PedAddress("pedws.example", 1600)


# ---------------------------------------------------------------------- the map's rules


def test_assign_refuses_an_assigned_id_and_a_second_id_for_one_address():
    ids = PedIdMap().assign(1, A)
    with pytest.raises(PedIdError, match=r"PED id 1 is assigned to 10.0.0.5:1503 already.*setid"):
        ids.assign(1, B)
    with pytest.raises(PedIdError, match=r"10.0.0.5:1503 is PED id 1 already.*deleteid --id 1"):
        ids.assign(2, A)
    assert ids.assign(2, B).address(2) == B


def test_set_creates_or_changes_release_keeps_the_number_delete_forgets():
    ids = PedIdMap().set(3, A).set(3, B)
    assert ids.address(3) == B
    released = ids.release(3)
    assert released.entries == {3: None}
    with pytest.raises(PedIdError, match=r"PED id 3 is released.*assignid --id 3"):
        released.address(3)
    with pytest.raises(PedIdError, match="released"):
        released.release(3)
    assert released.assign(3, A).address(3) == A  # a released id takes an address again
    assert released.delete(3).entries == {}
    with pytest.raises(PedIdError, match=r"PED id 3 is not defined \(no PED ids"):
        PedIdMap().delete(3)


def test_unknown_id_names_the_ids_there_are_and_how_to_assign_one():
    ids = PedIdMap().assign(1, A).assign(2, B).release(2)
    with pytest.raises(PedIdError) as caught:
        ids.address(7)
    text = str(caught.value)
    assert "PED id 7 is not defined (PED ids defined: 1, 2 (released))" in text
    assert "`pedclient mode assignid --id 7 --ip ADDRESS --port 1503`" in text


@pytest.mark.parametrize("bad", ["", "999.1.1.1", "a b", "-host", "x" * 254, "[::1", "ho_st"])
def test_bad_addresses_are_refused(bad):
    with pytest.raises(PedIdError, match="neither an IP address nor a host name"):
        check_host(bad)


def test_addresses_are_normalised():
    assert check_host("PedWS.Example") == "pedws.example"
    assert check_host("[::1]") == "::1"
    assert PedAddress("::1", 1503).target == "[::1]:1503"


# ---------------------------------------------------------------------- the file


def test_store_writes_owner_only_json_and_reads_it_back(tmp_path: Path):
    store = PedIdStore(tmp_path)
    assert store.load() == PedIdMap()  # no file yet: no ids
    store.save(PedIdMap().assign(1, A).assign(2, B).release(2))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert json.loads(store.path.read_text()) == {
        "version": 1, "ids": {"1": {"host": "10.0.0.5", "port": 1503}, "2": None}}
    assert store.load().entries == {1: A, 2: None}
    assert [p.name for p in tmp_path.iterdir()] == ["ped-ids.json"]  # no temp file left


@pytest.mark.parametrize("content", [b"{", b'{"version": 2, "ids": {}}',
                                     b'{"version": 1, "ids": {"1000": null}}',
                                     b'{"version": 1, "ids": {"1": {"host": "a b", "port": 1}}}',
                                     b" " * (300 * 1024)])
def test_a_damaged_file_is_reported_not_trusted(tmp_path: Path, content: bytes):
    (tmp_path / "ped-ids.json").write_bytes(content)
    with pytest.raises(PedIdError, match="fix or remove it"):
        PedIdStore(tmp_path).load()


# ---------------------------------------------------------------------- the command lines


def test_each_command_both_spellings(home: Path):
    h = str(home)
    code, out, _ = run("-mode", "assignid", "-id", "1", "-ip", "10.0.0.5", "-port", "1503",
                       "-home", h)
    assert code == 0 and out == "PED id 1 assigned to 10.0.0.5:1503.\n"
    code, out, _ = run("mode", "assignid", "--id", "2", "--ip", "pedws.example", "--port",
                       "1600", "--home", h)
    assert code == 0 and "PED id 2 assigned to pedws.example:1600" in out
    # Luna's own option names for the address
    code, out, _ = run("-mode", "setid", "-id", "3", "-id_ip", "10.0.0.7", "-home", h)
    assert code == 0 and out == "PED id 3 set to 10.0.0.7:1503 (new).\n"
    code, out, _ = run("mode", "setid", "--id", "3", "--ip", "10.0.0.8", "--home", h)
    assert code == 0 and "(was 10.0.0.7:1503)" in out
    assert run("-mode", "getid", "-id", "2", "-home", h)[1] == "PED id 2: pedws.example:1600\n"
    assert run("mode", "getid", "--ip", "10.0.0.5", "--home", h)[1] == (
        "10.0.0.5:1503 is PED id 1\n")
    code, out, _ = run("-mode", "releaseid", "-id", "3", "-home", h)
    assert code == 0 and "PED id 3 released (was 10.0.0.8:1503)" in out
    code, out, _ = run("mode", "getid", "--home", h)
    assert code == 0 and out.splitlines() == [
        "  PED ids:                  3",
        "    PED id 1: 10.0.0.5:1503",
        "    PED id 2: pedws.example:1600",
        "    PED id 3: (released: no address)",
    ]
    code, out, _ = run("-mode", "deleteid", "-id", "3", "-home", h)
    assert code == 0 and out == "PED id 3 deleted (was released).\n"
    assert PedIdStore(home).load().entries == {1: A, 2: B}


def test_bad_input_is_a_usage_error_and_changes_nothing(home: Path, capsys):
    h = str(home)
    for argv, says in (
        (["--id", "1000", "--ip", "10.0.0.5"], "a PED id is a whole number from 0 to 999"),
        (["--id", "x", "--ip", "10.0.0.5"], "'x' is not a whole number"),
        (["--id", "1", "--ip", "999.1.1.1"], "neither an IP address nor a host name"),
        (["--id", "1", "--ip", "10.0.0.5", "--port", "70000"], "port 70000 is not a TCP port"),
        (["--id", "1"], "the following arguments are required: --ip"),
    ):
        code = run("mode", "assignid", *argv, "--home", h)[0]
        err = capsys.readouterr().err  # argparse's own words go to stderr
        assert code == 2 and says in err, (argv, err)
    assert not (home / "ped-ids.json").exists()


def test_unknown_and_duplicate_ids_fail_with_exit_1(home: Path):
    h = str(home)
    assert run("mode", "assignid", "--id", "1", "--ip", "10.0.0.5", "--home", h)[0] == 0
    code, _, err = run("mode", "assignid", "--id", "1", "--ip", "10.0.0.6", "--home", h)
    assert code == 1 and "PED id 1 is assigned to 10.0.0.5:1503 already" in err
    code, _, err = run("mode", "assignid", "--id", "2", "--ip", "10.0.0.5", "--home", h)
    assert code == 1 and "10.0.0.5:1503 is PED id 1 already" in err
    for mode in ("getid", "releaseid", "deleteid", "testid"):
        code, _, err = run("mode", mode, "--id", "9", "--home", h)
        assert code == 1 and "PED id 9 is not defined (PED ids defined: 1)" in err, (mode, err)
    code, _, err = run("mode", "getid", "--ip", "10.0.0.9", "--home", h)
    assert code == 1 and "no PED id has 10.0.0.9:1503" in err
    assert PedIdStore(home).load().entries == {1: A}


def test_read_only_commands_create_no_home(tmp_path: Path):
    missing = tmp_path / "typo"
    code, out, _ = run("mode", "getid", "--home", str(missing))
    assert code == 0 and "none (assign one with" in out
    assert run("mode", "testid", "--id", "1", "--home", str(missing))[0] == 1
    assert not missing.exists()
    assert run("mode", "assignid", "--id", "1", "--ip", "::1", "--home", str(missing))[0] == 0
    assert stat.S_IMODE(missing.stat().st_mode) == 0o700


# ---------------------------------------------------------------------- the daemon's lookup


def test_lookup_command_answers_an_address_or_the_ids_there_are(tmp_path: Path):
    store = PedIdStore(tmp_path)
    store.save(PedIdMap().assign(4, B))
    lookup = lookup_command(store)
    assert LOOKUP_COMMAND == "ped-id"

    async def ask(args: dict[str, object]) -> dict[str, object]:
        return await lookup(args, None)  # type: ignore[arg-type]  # progress is unused

    assert trio.run(ask, {"id": 4}) == {"id": 4, "host": "pedws.example", "port": 1600,
                                        "target": "pedws.example:1600"}
    for args, says in (({"id": 5}, "PED id 5 is not defined (PED ids defined: 4)"),
                       ({"id": "4"}, "a PED id is a whole number"), ({}, "whole number")):
        with pytest.raises(ControlError) as caught:
            trio.run(ask, args)
        assert caught.value.code == "unknown-id" and says in caught.value.message


def test_concurrent_edits_lose_nothing(home: Path):
    """Each edit reads, changes and replaces the file under the lock: none is lost."""
    import threading

    codes: list[int] = []

    def assign(n: int) -> None:
        codes.append(run("mode", "assignid", "--id", str(n), "--ip", f"10.0.1.{n}",
                         "--home", str(home))[0])

    threads = [threading.Thread(target=assign, args=(n,)) for n in range(1, 21)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [0] * 20
    assert sorted(PedIdStore(home).load().entries) == list(range(1, 21))
