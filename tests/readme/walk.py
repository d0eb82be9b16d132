"""Running README's commands as pasted, on a temporary home, one section at a time.

What the harness changes, and nothing else (the placeholder mechanism):

* ``HOME`` is a fresh scratch directory (a short ``/tmp/rw-*`` path: Unix socket paths
  are short), so ``~`` and every per-user default land in it; ``PEDSERVER_HOME``,
  ``PEDCLIENT_HOME``, ``PEDHSM_HOME`` and ``HSMCLIENT_HOME`` are set to the per-user
  defaults under it (``~/.local/state/remote-ped/NAME``), which root would otherwise not use
  (``/var/lib/remote-ped``): the commands behave as for an administrator's own account.
* In each command, the words README uses for things only a real site has are replaced
  (`placeholders`): ports ``1503``, ``9697`` and ``1792`` by free ports, ``WORKSTATION`` and
  ``HSMHOST`` by 127.0.0.1, ``/path/to/keys`` by a keyring of blank keys and
  ``/tmp/ped.sock`` by a socket in the scratch home.
* Each section starts from what README says is there before it (`Walk.setup`): for the HSM
  host, a pedserver on the workstation with a PED (auto operator) reading the same keys
  the HSM's cabled PED imprints the orange key on; for peer-to-peer, pedserver running
  and an HSM with its RPV; for `pedkey`, the PIN file ``pins.txt``; for the client path,
  an initialised HSM whose cabled PED is emulated (auto operator), its client listener
  on the port standing for ``1792``, and the challenge secret in ``challenge.txt``,
  which stands in for the word ``CHALLENGE``.
* A few steps need what a person does around them (`tests.readme.test_walkthrough`'s
  tables): a foreground program runs in the background (``pedemu``), a confirmation is
  typed, a Luna spelling of ``mode start`` runs in a home of its own.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import attrs

from pedtools.testing import Result, Site, free_port
from tests.hsmclient.conftest import require_p11_tools
from tests.readme.readme_steps import Step

COMMAND_TIMEOUT = 120.0
DAEMONS = ("hsmclient", "pedhsm", "pedclient", "pedserver")


@attrs.frozen
class Broken:
    """A README command that does not work as pasted today; the issue section fixing it
    and, so that the section's later steps can go on, what works meanwhile."""

    why: str
    workaround_env: Mapping[str, str] = attrs.field(factory=dict)  # values: ~ is HOME


@attrs.frozen
class Extras:
    """What a person does around some steps (keyed by `Step.bare`)."""

    broken: Mapping[str, Broken]
    background: Mapping[str, str]  # a foreground program -> the path it makes when ready
    stdin: Mapping[str, str]  # what the person types
    before: Mapping[str, str]  # a command the harness runs first (placeholders apply)
    isolated: frozenset[str]  # run in a pedserver home and port of its own, then stopped


class Walk:
    """One README section walked through in a scratch home (see the module docstring)."""

    def __init__(self, section: str, steps: list[Step], extras: Extras) -> None:
        self.section = section
        self.steps = steps
        self.extras = extras
        self.site = Site(prefix="rw-")
        self.home = self.site.root
        self.done = 0
        self.background: list[subprocess.Popen[bytes]] = []
        self.ports = {"1503": free_port(), "9697": free_port(), "1792": free_port()}
        self.challenge = ""
        state = self.home / ".local" / "state" / "remote-ped"
        venv_bin = str(Path(sys.executable).parent)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PED", "PYTEST", "XDG_", "HSMCLIENT", "P11_KIT"))
        }
        self.env.update(
            HOME=str(self.home),
            PATH=f"{venv_bin}:{self.env.get('PATH', '/usr/bin:/bin')}",
            PEDSERVER_HOME=str(state / "pedserver"),
            PEDCLIENT_HOME=str(state / "pedclient"),
            PEDHSM_HOME=str(state / "pedhsm"),
            HSMCLIENT_HOME=str(state / "hsmclient"),
        )
        self.homes = {prog: [Path(self.env[f"{prog.upper()}_HOME"])] for prog in DAEMONS}
        self.homes["pedhsm"].append(self.home / "hsm")  # README's --home ~/hsm
        self.setup()

    # -- placeholders and running ------------------------------------------------------
    def placeholders(self, command: str, ports: Mapping[str, int] | None = None) -> str:
        for word, port in (ports or self.ports).items():
            command = re.sub(rf"\b{word}\b", str(port), command)
        for word in ("WORKSTATION", "HSMHOST"):
            command = re.sub(rf"\b{word}\b", "127.0.0.1", command)
        if self.challenge:
            command = re.sub(r"\bCHALLENGE\b", self.challenge, command)
        command = command.replace("/path/to/keys", str(self.home / "keys"))
        return command.replace("/tmp/ped.sock", str(self.home / "ped.sock"))

    def shell(
        self, command: str, *, env: Mapping[str, str] | None = None, stdin: str = ""
    ) -> Result:
        """*command* run by bash in the scratch home, as typed at a prompt."""
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=self.home,
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return Result(
            (command,), done.returncode, done.stdout, done.stderr, time.monotonic() - started
        )

    def must(self, command: str) -> Result:
        result = self.shell(command)
        assert result.code == 0, f"setup `{command}`: status {result.code}\n{result.output}"
        return result

    # -- a section's starting point --------------------------------------------------------
    def setup(self) -> None:
        keys = self.home / "keys"
        if self.section == "hsm-host":  # pedserver on the workstation, with a PED
            self.must(f"pedkey blank --count 10 --dir {keys}")
            ws = self.home / "ws"
            self.homes["pedserver"].append(ws)
            self.must(
                f"pedserver mode start --home {ws} --ip 127.0.0.1 --port {self.ports['1503']}"
                f" --device 'emulated:{keys}?operator=auto'"
            )
        elif self.section == "peer":  # pedserver running; an HSM with its RPV
            self.must(f"pedkey blank --count 10 --dir {keys}")
            self.must(
                f"pedserver mode start --ip 127.0.0.1 --port {free_port()}"
                f" --device 'emulated:{keys}?operator=auto'"
            )
            self.must(
                f"pedhsm mode start --pedclient {self.env['PEDCLIENT_HOME']}/pedclient.sock"
                f" --local-ped 'emulated:{keys}?mode=local&operator=auto'"
            )
            self.must("pedhsm hsm ped vector init")
        elif self.section == "client-path":  # an HSM with its client listener; a challenge
            require_p11_tools()  # pkcs11-tool and p11-kit-client.so, or what to install
            self.must(f"pedkey blank --count 10 --dir {keys}")
            self.must(
                f"pedhsm mode start --local-ped 'emulated:{keys}?mode=local&operator=auto'"
                f" --ntls-ip 127.0.0.1 --ntls-port {self.ports['1792']}"
            )
            self.must("pedhsm hsm init --label demo")
            self.challenge = secrets.token_hex(12)
            challenge = self.home / "challenge.txt"
            challenge.write_text(self.challenge + "\n")
            challenge.chmod(0o600)
        elif self.section == "ped-keys":  # the PIN file README's `pedkey new` names
            pins = self.home / "pins.txt"
            pins.write_text(f"HSM SO = {secrets.randbelow(10**8):08d}\n")
            pins.chmod(0o600)

    # -- the steps -----------------------------------------------------------------------
    def reach(self, index: int) -> None:
        """Run the steps before *index* this walk has not run yet (a test run alone)."""
        for step in self.steps[self.done : index - 1]:
            self.run(step)

    def run(self, step: Step) -> Result:
        """Run *step* as pasted (after what the person does first); when it is known to
        fail today, also what works meanwhile, so that the next steps can go on."""
        extras = self.extras
        if step.bare in extras.before:
            self.must(self.placeholders(extras.before[step.bare]))
        if step.bare in extras.isolated:
            result = self._isolated(step)
        elif step.bare in extras.background:
            result = self._background(step, self.placeholders(extras.background[step.bare]))
        else:
            command = self.placeholders(step.command)
            result = self.shell(command, stdin=extras.stdin.get(step.bare, ""))
            self._keep_exports(command, result)
            broken = extras.broken.get(step.bare)
            if broken is not None and result.code != 0 and broken.workaround_env:
                env = {k: v.replace("~", str(self.home)) for k, v in broken.workaround_env.items()}
                meanwhile = self.shell(command, env=env, stdin=extras.stdin.get(step.bare, ""))
                if meanwhile.code != 0:  # not an expected failure: the walk cannot go on
                    raise RuntimeError(
                        f"`{command}` with {env}: status {meanwhile.code}\n{meanwhile.output}"
                    )
        self.done = max(self.done, step.index)
        return result

    def _keep_exports(self, command: str, result: Result) -> None:
        """An ``export NAME=VALUE`` step holds for the steps after it, as in one terminal."""
        exported = re.match(r"export (\w+)=(\S+)", command)
        if exported and result.code == 0:
            name, value = exported.groups()
            value = str(self.home) + value[1:] if value.startswith("~") else value
            # as bash expanded it ($HOME and the like)
            value = re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), ""), value)
            self.env[name] = value
            if name == "PEDHSM_HOME":
                self.homes["pedhsm"].append(Path(self.env[name]))

    def _isolated(self, step: Step) -> Result:
        home = self.home / f"isolated-{step.index}"
        self.homes["pedserver"].append(home)
        ports = {word: free_port() for word in self.ports}
        result = self.shell(
            self.placeholders(step.command, ports), env={"PEDSERVER_HOME": str(home)}
        )
        self.shell("pedserver mode stop", env={"PEDSERVER_HOME": str(home)})
        return result

    def _background(self, step: Step, ready: str) -> Result:
        started = time.monotonic()
        log = self.home / f"step-{step.index}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", "exec " + self.placeholders(step.command)],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.background.append(process)
        deadline = started + 30
        while not Path(ready).exists() and process.poll() is None:
            assert time.monotonic() < deadline, f"{step.command}: not ready in 30 s"
            time.sleep(0.02)
        code = 0 if process.poll() is None else process.returncode
        text = log.read_text(errors="replace")
        return Result((step.command,), code, text, "", time.monotonic() - started)

    def close(self) -> None:
        """Stop every daemon in every home the section used, the background programs,
        then anything left naming the scratch home; remove it."""
        for prog, homes in self.homes.items():
            for home in homes:
                if home.exists():
                    self.shell(f"{prog} mode stop --home {home}")
        for process in self.background:
            process.terminate()
            process.wait(10)
        self.site.close()
