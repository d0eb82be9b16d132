"""`pedconform hsm`'s steps and command line, without an HSM: the template and its
placeholders, the tester's answers, the counter, and the refusals of a bad command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedtools.conform import hsm_suite
from pedtools.conform.hsm_steps import (
    DEFAULT_CONNECTED_PATTERN,
    DEFAULT_COUNTER_PATTERN,
    StepResult,
    StepRunner,
    counter_value,
    fill,
    parse_step_overrides,
    says_connected,
)
from pedtools.testing import make_keyring

VALUES = {"host": "10.0.0.5", "port": "1600", "address": "10.0.0.5:1600", "pedclient": ""}


def test_the_template_gets_the_steps_words_and_the_address() -> None:
    runner = StepRunner("pedhsm --home '/tmp/h 1' {command}", VALUES)
    assert runner.argv("connect") == [
        "pedhsm", "--home", "/tmp/h 1",
        "hsm", "ped", "connect", "--ip", "10.0.0.5", "--port", "1600",
    ]
    words = parse_step_overrides(["login=role login --name co", "show-counter="])
    other = StepRunner("adapter {step} {address} {unknown}", VALUES, words)
    assert other.argv("login") == ["adapter", "login", "10.0.0.5:1600", "{unknown}"]
    assert other.command_words("login") == "role login --name co"
    assert not other.available("show-counter") and other.available("login")
    assert fill("{host}:{port}", VALUES) == "10.0.0.5:1600"


def test_a_bad_step_override_is_refused() -> None:
    with pytest.raises(ValueError, match="NAME=WORDS"):
        parse_step_overrides(["logon=hsm login"])
    with pytest.raises(ValueError, match="NAME=WORDS"):
        parse_step_overrides(["login"])


def test_the_counter_is_found_in_the_output() -> None:
    shown = StepResult("show-counter", 0, "   SO login attempts left: 2\n   Auditor: none\n")
    assert counter_value(shown, DEFAULT_COUNTER_PATTERN) == 2
    assert counter_value(StepResult("show-counter", 0, " 7\n"), DEFAULT_COUNTER_PATTERN) == 7
    assert counter_value(StepResult("show-counter", 0, "nothing"), DEFAULT_COUNTER_PATTERN) is None
    assert counter_value(StepResult("show-counter", 1, "3"), DEFAULT_COUNTER_PATTERN) is None
    assert counter_value(StepResult("show-counter", None), DEFAULT_COUNTER_PATTERN) is None


def test_the_link_state_is_read_from_show_link() -> None:
    up = StepResult("show-link", 0, "PED mode: remote\n   Connected:          yes\n")
    down = StepResult("show-link", 0, "PED mode: remote\n   Connected:          no\n")
    assert says_connected(up, DEFAULT_CONNECTED_PATTERN) is True
    assert says_connected(down, DEFAULT_CONNECTED_PATTERN) is False
    assert says_connected(StepResult("show-link", 1, "Connected: yes"),
                          DEFAULT_CONNECTED_PATTERN) is None  # the step failed: not judged
    assert says_connected(StepResult("show-link", 0, "", said_connected=True), "x") is True


async def test_without_a_template_the_tester_is_asked_about_the_link() -> None:
    said: list[str] = []
    answers = iter(["y", "n", "s"])
    runner = StepRunner(None, VALUES, say=said.append, ask=lambda _prompt: next(answers))
    assert says_connected(await runner.run("show-link"), DEFAULT_CONNECTED_PATTERN) is True
    assert says_connected(await runner.run("show-link"), DEFAULT_CONNECTED_PATTERN) is False
    assert says_connected(await runner.run("show-link"), DEFAULT_CONNECTED_PATTERN) is None
    assert any("`pedhsm hsm ped show`" in line for line in said)


async def test_without_a_template_the_tester_is_asked() -> None:
    said: list[str] = []
    answers = iter(["y", "n", "s", "4", ""])
    runner = StepRunner(None, VALUES, say=said.append, ask=lambda _prompt: next(answers))
    assert (await runner.run("login")).code == 0
    assert (await runner.run("login")).code == 1
    assert (await runner.run("connect")).code is None  # skipped
    assert counter_value(await runner.run("show-counter"), DEFAULT_COUNTER_PATTERN) == 4
    assert (await runner.run("show-counter")).code is None  # it shows none
    assert any("connect to the PED at 10.0.0.5:1600" in line for line in said)
    assert any("`pedhsm hsm login`" in line for line in said)


@pytest.mark.process  # runs sh
async def test_a_template_step_runs_and_reports_its_status(tmp_path: Path) -> None:
    runner = StepRunner("sh -c 'echo {step} said; exit 3'", VALUES)
    done = await runner.run("logout")
    assert done.code == 3 and "logout said" in done.output
    assert done.summary() == "logout exit 3 (logout said)"


def test_list_prints_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert hsm_suite.main(["--list"]) == 0
    out = capsys.readouterr().out
    for case in ("1.1", "2.2", "3.4", "3.8", "4.1"):
        assert f"\n{case} " in f"\n{out}"
    assert "silent PED (pedo) (optional)" in out and "PROTOCOL.md 3.6, 7" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "--keyring DIR is required"),
        (["--keyring", "{blank}"], "holds no orange key"),
        (["--keyring", "{ring}", "--cases", "9.9"], "unknown case(s) 9.9"),
        (["--keyring", "{ring}", "--step", "logon=x"], "NAME=WORDS"),
        (["--keyring", "{ring}", "--listen", "1600"], "give IP:PORT"),
        (["--keyring", "{ring}", "--connected-pattern", "Connected: (yes"],
         "--connected-pattern 'Connected: (yes' is not a regular expression"),
        (["--keyring", "{ring}", "--counter-pattern", "["], "is not a regular expression"),
    ],
)
def test_a_bad_command_line_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    make_keyring(tmp_path / "ring", blanks=1)
    (tmp_path / "blank").mkdir()
    argv = [a.format(ring=tmp_path / "ring", blank=tmp_path / "blank") for a in argv]
    assert hsm_suite.main(argv) == 2
    assert words in capsys.readouterr().err


def test_pedconform_runs_the_hsm_suite(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pedtools.conform import cli

    # only the hsm suite: this test does not depend on the PED suite's module
    monkeypatch.setattr(cli, "SUITES", {"hsm": cli.SUITES["hsm"]})
    assert cli.main(["hsm", "--list"]) == 0
    assert "4.1   link lost mid-operation" in capsys.readouterr().out


def test_an_address_it_cannot_listen_on_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_keyring(tmp_path / "ring", blanks=1)
    argv = ["--keyring", str(tmp_path / "ring"), "--listen", "203.0.113.1:1600", "--hsm-cmd", "x"]
    assert hsm_suite.main(argv) == 1
    assert "cannot listen on 203.0.113.1:1600" in capsys.readouterr().err


@pytest.mark.process  # tries to start a program
def test_a_template_that_cannot_run_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_keyring(tmp_path / "ring", blanks=1)
    argv = ["--keyring", str(tmp_path / "ring"), "--hsm-cmd", "no-such-program {command}"]
    assert hsm_suite.main(argv) == 1
    assert "cannot run `no-such-program hsm ped disconnect`" in capsys.readouterr().err
