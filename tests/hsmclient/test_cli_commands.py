"""hsmclient's command line in process: help and version, the identity, the server registry
(and Luna's vtl spellings), ``slot list`` and ``verify`` without a daemon, bad input."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsmclient.cli import build_parser, main
from hsmclient.daemon import BACKEND_ENV
from hsmclient.slots import SlotMap
from tests.hsmclient.test_daemon import FAKE
from tests.pedserver.fakes import short_tmp

COMMANDS = [
    (), ("mode",), ("mode", "start"), ("mode", "stop"), ("mode", "show"), ("mode", "config"),
    ("certificate",), ("certificate", "regen"), ("certificate", "show"),
    ("certificate", "export"), ("server",), ("server", "register"), ("server", "list"),
    ("server", "delete"), ("slot",), ("slot", "list"), ("verify",), ("vtl",),
    ("vtl", "addServer"), ("vtl", "listServers"), ("vtl", "deleteServer"), ("vtl", "verify"),
]


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmp() as path:
        yield path


def run(*argv: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main([str(a) for a in argv], out=out, err=err), out.getvalue(), err.getvalue()


@pytest.fixture
def cert(home: Path) -> Path:
    code, _, err = run("certificate", "export", home / "server.pem", "--home", home / "srv")
    assert code == 0, err
    return home / "server.pem"


@pytest.mark.parametrize("words", COMMANDS)
def test_every_command_has_help(words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
                                ) -> None:
    assert main([*words, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: hsmclient")


def test_version_and_no_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("hsmclient ")
    code, _, err = run()
    assert code == 2 and err.startswith("You must specify a mode.")
    code, _, err = run("-mode")
    assert code == 2 and "hsmclient -mode start" in err
    code, _, err = run("server")
    assert code == 2 and "'hsmclient server' needs an action" in err


def test_the_parser_accepts_the_start_options() -> None:
    args = build_parser().parse_args(["mode", "start", "--foreground", "--socket", "/s",
                                      "--slot-query-timeout", "3", "--log-format", "json",
                                      "--log-level", "debug", "--home", "/h"])
    assert (args.socket, args.slot_query_timeout, args.log_format) == ("/s", 3, "json")


def test_certificate_show_export_regen(home: Path) -> None:
    code, out, _ = run("certificate", "show", "--home", home)
    assert code == 0 and "SHA-256" in out
    code, out, _ = run("certificate", "export", home / "me.pem", "--home", home)
    assert code == 0 and "pedhsm client register --name NAME" in out
    assert (home / "me.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    code, out, _ = run("certificate", "regen", "--home", home)
    assert code == 0 and "It replaces" in out
    assert "pedhsm client delete --name NAME and pedhsm client register" in out
    code, _, err = run("certificate", "export", home / "no" / "dir" / "x.pem", "--home", home)
    assert code == 1 and "hsmclient:" in err


def test_server_registry_round_trip(home: Path, cert: Path) -> None:
    code, out, _ = run("server", "list", "--home", home)
    assert code == 0 and "No servers registered" in out
    code, out, err = run("server", "register", "--name", "hsm1", "--certificate", cert,
                         "--ip", "192.0.2.7", "--home", home)
    assert code == 0, err
    assert "Registered server 'hsm1' at 192.0.2.7:1792" in out
    code, out, _ = run("server", "list", "--home", home)
    assert code == 0 and out.startswith("hsm1  192.0.2.7:1792\n") and "fingerprint" in out
    slots = SlotMap(home)
    first = slots.slot_for("hsm1", "1001")
    code, out, _ = run("server", "delete", "--name", "hsm1", "--home", home)
    assert code == 0 and "Deleted server 'hsm1'" in out and "1 slot id(s) are retired" in out
    assert slots.where(first) is None
    code, out, _ = run("server", "list", "--home", home)
    assert "No servers registered" in out
    assert (home / "pins.sqlite3").stat().st_mode & 0o777 == 0o600


def test_luna_vtl_spellings(home: Path, cert: Path) -> None:
    code, out, err = run("vtl", "addServer", "-n", "192.0.2.8", "-c", cert, "--home", home)
    assert code == 0, err
    assert "Registered server '192.0.2.8' at 192.0.2.8:1792" in out
    code, out, _ = run("-vtl", "listServers", "-home", home)
    assert code == 0 and out.startswith("192.0.2.8  192.0.2.8:1792")
    code, out, _ = run("vtl", "deleteserver", "-n", "192.0.2.8", "--home", home)
    assert code == 0 and "Deleted server '192.0.2.8'" in out


@pytest.mark.parametrize(("extra", "code", "message"), [
    (("--port", "70000"), 2, "port 70000 is not between 1 and 65535"),
    (("--port", "http"), 2, "'http' is not a port number"),
    (("--ip", "hsm.example"), 1, "'hsm.example' is not an IPv4 or IPv6 address"),
    (("--name", "bad name"), 1, "'bad name' is not a valid name"),
])
def test_bad_registrations(home: Path, cert: Path, extra: tuple[str, ...], code: int,
                           message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = {"--name": "hsm1", "--ip": "192.0.2.7", "--certificate": str(cert)}
    for option, value in zip(extra[::2], extra[1::2], strict=True):
        argv[option] = value
    flat = [w for pair in argv.items() for w in pair]
    got, _, err = run("server", "register", *flat, "--home", home)
    assert got == code
    assert message in err + capsys.readouterr().err
    assert run("server", "list", "--home", home)[1].startswith("No servers")


def test_a_file_that_is_not_a_certificate(home: Path) -> None:
    (home / "notes.txt").write_text("hello\n")
    code, _, err = run("server", "register", "--name", "hsm1", "--certificate",
                       home / "notes.txt", "--ip", "192.0.2.7", "--home", home)
    assert code == 1 and "not PEM text" in err
    code, _, err = run("server", "register", "--name", "hsm1", "--certificate",
                       home / "missing.pem", "--ip", "192.0.2.7", "--home", home)
    assert code == 1 and "no such file" in err


def test_unknown_and_duplicate_names(home: Path, cert: Path) -> None:
    code, _, err = run("server", "delete", "--name", "hsm9", "--home", home)
    assert code == 1 and "no server named 'hsm9'; see: hsmclient server list" in err
    assert run("server", "register", "--name", "hsm1", "--certificate", cert, "--ip",
               "192.0.2.7", "--home", home)[0] == 0
    code, _, err = run("server", "register", "--name", "hsm2", "--certificate", cert, "--ip",
                       "192.0.2.8", "--home", home)
    assert code == 1 and "already registered as server 'hsm1'" in err


def test_slot_list_says_how_to_start_the_daemon(home: Path) -> None:
    code, _, err = run("slot", "list", "--home", home)
    assert code == 3
    assert f"hsmclient is not running (home {home}); start it with: hsmclient mode start" \
        in err
    code, out, _ = run("mode", "show", "--home", home)
    assert code == 3 and "not running" in out


def test_verify_without_a_daemon_asks_the_servers(home: Path, cert: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("verify", "--home", home)
    assert code == 1 and "no server registered" in err
    monkeypatch.setenv(BACKEND_ENV, FAKE)
    run("server", "register", "--name", "hsm1", "--certificate", cert, "--ip", "192.0.2.7",
        "--home", home)
    code, out, err = run("verify", "--home", home)
    assert code == 0, err
    assert out.splitlines() == [
        "Server hsm1 (192.0.2.7:1792): reachable, 2 partition(s)",
        "    slot 0: partition app (serial 1001), ready",
        "    slot 1: partition web (serial 1002), ready",
    ]
    code, out, _ = run("vtl", "verify", "--json", "--home", home)
    assert code == 0 and json.loads(out)["slots"][1]["serial"] == "1002"
    other = home / "other.pem"
    assert run("certificate", "export", other, "--home", home / "o")[0] == 0
    run("server", "register", "--name", "down1", "--certificate", other, "--ip", "192.0.2.9",
        "--home", home)
    code, out, _ = run("verify", "--home", home)
    assert code == 1
    assert "Server down1 (192.0.2.9:1792): server unreachable: connection refused" in out


def test_mode_config(home: Path) -> None:
    code, out, _ = run("mode", "config", "--set", "slot_query_timeout", "5", "--home", home)
    assert code == 0 and "Set slot_query_timeout = 5" in out
    code, out, _ = run("mode", "config", "--show", "--home", home)
    assert code == 0 and "slot_query_timeout" in out and "(file)" in out
    code, _, err = run("mode", "config", "--set", "slot_query_timeout", "0", "--home", home)
    assert code == 1 and "slot_query_timeout" in err
