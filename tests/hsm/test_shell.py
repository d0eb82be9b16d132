"""The pedhsm shell's words: where it looks for its HSM and pedclient, a daemon that broke
off, the time waited on a terminal."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from hsm import cli
from hsm.homes import default_pedclient, listening, pedclient_warning
from hsm.waiting import CLEAR_LINE, WaitClock


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_names_the_real_default_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "$PEDHSM_HOME if set, else" in " ".join(out.split()), out
    assert "remote-ped/pedhsm" in out.replace("\n", "").replace(" ", "")


def test_no_hsm_at_home_says_where_the_home_came_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PEDHSM_HOME", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    code, _, err = _run(capsys, "hsm", "show")
    assert code == cli.EXIT_DOWN, err
    assert "the home came from the default" in err, err
    assert "--home DIR, else $PEDHSM_HOME" in err and "export PEDHSM_HOME" in err, err
    monkeypatch.setenv("PEDHSM_HOME", str(tmp_path / "h"))
    code, _, err = _run(capsys, "hsm", "show")
    assert code == cli.EXIT_DOWN and "the home came from $PEDHSM_HOME" in err, err
    assert not (tmp_path / "h").exists()  # a read-only command creates nothing


def test_a_daemon_that_breaks_off_is_reported_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def reset(*args: object, **kwargs: object) -> dict[str, object]:
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr("ped.daemon.control_request_sync", reset)
    for argv in (("hsm", "login"), ("mode", "stop")):
        code, _, err = _run(capsys, "--home", str(tmp_path), *argv)
        assert code == cli.EXIT_DOWN, err
        assert "broke off its answer (Connection reset by peer)" in err, err
        assert "Traceback" not in err and "ConnectionResetError" not in err


def test_pedclient_defaults_to_its_own_socket_and_silence_there_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEDCLIENT_HOME", str(tmp_path / "pc"))
    path = default_pedclient()
    assert path == str(tmp_path / "pc" / "pedclient.sock")
    assert not (tmp_path / "pc").exists()
    warning = pedclient_warning(path)
    assert f"nothing answers on pedclient's socket {path}" in warning
    assert "pedclient mode start" in warning and "--pedclient PATH" in warning
    (tmp_path / "pc").mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        assert pedclient_warning(path)  # bound, not listening: nothing answers yet
        server.listen(1)
        assert pedclient_warning(path) == ""
        # found without connecting: pedclient sees no empty link from the check
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
        assert listening(path, tmp_path / "no-such-table")  # elsewhere: by connecting


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_time_waited_ticks_on_a_terminal_only() -> None:
    now = [100.0]
    out = _Terminal()
    clock = WaitClock(out, interval=3600, clock=lambda: now[0])
    with clock:
        clock.line("Please attend to the PED.")
        now[0] += 12
        clock.tick()
        clock.line("PED: key 1 of 2 read.")
    text = out.getvalue()
    assert "waited 12 s" in text
    # each progress line starts on a clean line; the counting line is gone at the end
    assert text.endswith(f"{CLEAR_LINE}PED: key 1 of 2 read.\n"), repr(text)
    plain = io.StringIO()
    with WaitClock(plain, interval=3600, clock=lambda: now[0]) as quiet:
        quiet.line("Please attend to the PED.")
        quiet.tick()
    assert plain.getvalue() == "Please attend to the PED.\n"
