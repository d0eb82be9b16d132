"""`make demo` as a test: the whole flow through real processes, and nothing left behind."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pedtools.demo.flow as flow
import pedtools.demo.run as demo_run
from pedtools.demo.console import shell_line
from pedtools.testing import processes_naming
from tests.system.demo_run import run_demo

PROOF = re.compile(r"^Byte taps: ([\d,]+) bytes relayed, (\d+) secrets searched, 0 found\.$", re.M)


def _bash_words(line: str, root: Path) -> list[str]:
    """The words bash makes of *line* with DEMO set to *root* (run by nothing)."""
    done = subprocess.run(
        ["bash", "-c", f'words() {{ printf "%s\\0" "$@"; }}; words {line}'],
        env={"DEMO": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().split("\0")[:-1]


def _block(out: str, command: str) -> str:
    """What the demo printed under the first `$ COMMAND` line, up to the next command."""
    after = out.split(f"$ {command}\n", 1)[1]
    return re.split(r"^(?:\$ |== )", after, maxsplit=1, flags=re.M)[0]


def test_printed_commands_paste_as_shown() -> None:
    root = Path("/tmp/ped-demo-x")
    argv = [
        "pedserver", "--device", f"emulated:{root}/keys?operator=auto&pin-file={root}/p.txt",
        "--label", "it's a \"b\" `c` $HOME", f"{root}/a b", "plain", "a&b",
    ]
    line = shell_line(argv, root)
    assert "$DEMO/keys?" in line and "/tmp/ped-demo-x" not in line
    assert _bash_words(line, root) == argv

KEY_LINES = [
    '$ pedkey blank --count 16 --dir "$DEMO/keyring"',
    '$ export PEDSERVER_HOME="$DEMO/home-pedserver" PEDCLIENT_HOME="$DEMO/home-pedclient" '
    'PEDHSM_HOME="$DEMO/home-pedhsm"',
    "Remote PED Vector set in the HSM and on the orange PED key(s).",
    "PED operation required to connect to Remote PED - use orange PED Key(s).",
    "Remote PED connected (127.0.0.1:",
    "$ pedhsm hsm init --label demo-hsm",
    "HSM 150001 initialised with label 'demo-hsm'.",
    "HSM SO logged in.",
    "Partition 'demo' initialised.",
    "Crypto Officer of partition 'demo' initialised.",
    "Crypto Officer of partition 'demo' activated.",
    "HSM SO login failed (wrong PED key secret or PED PIN); 1 consecutive failure(s) of 3",
    "SO login attempts left: 2",
    "SO login attempts left: 3",
    "chain intact",
    "Remote PED disconnected.",
    "16 image(s): 16 imprinted, 0 blank, 0 damaged",
    # what the PEDs' screens said, under the command that made them say it
    "    [HSM's cabled PED screen] Insert a blank key: ORANGE key 1 of 1 Press ENTER.",
    "    [workstation PED screen] Insert a ORANGE PED key for Remote PED Vector Press ENTER.",
    "    [workstation PED screen] Insert a blank key: BLUE key 3 of 3 Press ENTER.",
    "    [workstation PED screen] Enter PED PIN: > ",
    "    [second PED screen] Insert a BLUE PED key for HSM SO Press ENTER.",
    "== 12. What the relays saw: every byte through the taps, searched",
    "== Summary",
    "Every daemon stopped; scratch directory removed. Demo OK.",
]


def test_the_demo_runs_from_anywhere_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = run_demo(cwd=tmp_path)  # not from the repo: nothing depends on the cwd
    assert run.code == 0, run.out + run.err
    for line in KEY_LINES:
        assert line in run.out, line
    # every command is shown with its timing, and the blue/red keys are 2 of 3 with a PIN
    assert len(re.findall(r"^    \(\d+\.\d\d s", run.out, re.M)) >= 35
    assert re.search(r"blue +HSM SO .* 1 of 3 \(2 needed\) +yes", run.out)
    assert re.search(r"red +HSM cloning domain .* 3 of 3 \(2 needed\) +yes", run.out)
    assert re.search(r"black +Crypto Officer demo .* 2 of 3", run.out)
    # the activated CO logs in without the PED
    activated = run.out.split("$ pedhsm role logout --partition demo\n")[-1]
    login = activated.split("$ pedhsm object list")[0]
    assert "logged in" in login and "Please attend" not in login
    # the PED screens come under the command that made the PED show them
    vector = _block(run.out, "pedhsm hsm ped vector init")
    assert "[HSM's cabled PED screen] Imprint complete. 1 key(s) written." in vector
    assert "workstation PED screen" not in vector
    login = _block(run.out, "pedhsm hsm login")
    assert "[workstation PED screen] Insert a BLUE PED key for HSM SO Key 2 of 2." in login
    assert "Enter PED PIN" not in _block(run.out, "pedhsm hsm ped show")
    assert not re.search(r"screen\] .*> \*", run.out)  # a PIN's stars are not shown
    # every byte the relays saw, searched: nothing found; said in section 12 and at the end
    proofs = PROOF.findall(run.out)
    assert len(proofs) == 2 and proofs[0] == proofs[1], run.out
    relayed, searched = int(proofs[0][0].replace(",", "")), int(proofs[0][1])
    assert relayed > 5000 and searched >= 40
    assert run.out.rstrip().splitlines()[-2] == PROOF.search(run.out).group(0)  # type: ignore[union-attr]
    # every command line pastes into a shell as the words the demo ran
    for line in re.findall(r"^\$ (.*)$", run.out, re.M):
        command = line.removesuffix(" &")
        if not command.startswith("export "):
            words = _bash_words(command, run.root)
            assert not any("$" in w for w in words), line
            assert words[0] in ("pedkey", "pedserver", "pedclient", "pedhsm", "python"), line
    assert run.err == ""
    assert not run.root.exists()
    assert not processes_naming(str(run.root))


def test_a_failing_step_prints_its_output_and_still_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(flow, "HSM_LABEL", "x" * 200)  # pedhsm refuses such a label
    out = io.StringIO()
    code = demo_run.run_demo(out)
    text = out.getvalue()
    root = Path(re.search(r"DEMO=(\S+)", text).group(1))  # type: ignore[union-attr]
    assert code == 1
    assert "$ pedhsm hsm init --label xxxx" in text
    assert "DEMO FAILED: hsm init: `pedhsm hsm init --label" in text
    assert "exited with status 1 (expected 0)" in text
    assert "--- last lines of $DEMO/home-pedserver/pedserver.log" in text
    assert "Demo OK" not in text
    assert not root.exists()
    assert not processes_naming(str(root))


def test_sigterm_mid_run_stops_everything() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pedtools.demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("== 6."):  # daemons up and the link connected
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    code = proc.wait(timeout=120)
    text = "".join(lines) + rest
    root = Path(re.search(r"DEMO=(\S+)", text).group(1))  # type: ignore[union-attr]
    assert code == demo_run.EXIT_INTERRUPTED, text
    assert "Interrupted: stopping the daemons and removing the scratch directory." in text
    deadline = time.monotonic() + 5  # nothing to wait for in practice; bounded anyway
    while processes_naming(str(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_naming(str(root))
    assert not root.exists()
