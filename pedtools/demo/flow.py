"""The demo's steps, printed as a person at a terminal would see them.

Every step is one real command (``pedkey``, ``pedserver``, ``pedclient``, ``pedhsm``) run
as a process by `pedtools.testing.procs.Site` and printed by `pedtools.demo.console`
(quoted, with its output, its timing and the PED screens it caused); the demo stops at
the first step whose exit status is not the expected one.  Every PED is a watched
emulated PED behind a byte tap, pedclient and each pedserver are reached through one
(`pedtools.demo.taps`); the last section searches every tapped byte for every secret.
The PINs and the challenge secret are random for each run, written to owner-only files,
and never printed.
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import TextIO

from keys import read_pin_file
from pedtools.demo.console import Console, DemoFailed
from pedtools.demo.taps import TapThread
from pedtools.testing.procs import Result, Site, free_port
from pedtools.testing.secret_scan import find, secrets_of

HSM_SERIAL = "150001"
HSM_LABEL = "demo-hsm"
PARTITION = "demo"
#: The labels pedhsm gives the keys it imprints (what the auto operator's PIN file keys on).
LABELS = (
    "HSM SO",
    "HSM cloning domain",
    f"Partition SO {PARTITION}",
    f"Partition domain {PARTITION}",
    f"Crypto Officer {PARTITION}",
)
#: Blank keys in the keyring at the start: orange 1 + five 2-of-3 keysets.
BLANKS = 16
#: Every imprint on the remote PED: M of N and a PED PIN (the auto operator's answers).
REMOTE_OPTIONS = ("--auto-m", "2", "--auto-n", "3", "--auto-pin", "yes")


def _random_pin() -> str:
    return f"{secrets.randbelow(10**8):08d}"


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


class Demo(Console):
    """Runs and prints the steps; `steps` keeps each one for the summary."""

    def __init__(
        self, site: Site, out: TextIO, taps: TapThread, *, log_level: str = "info"
    ) -> None:
        super().__init__(site, out)
        self.taps = taps
        self.log_level = log_level
        self.proof = ""  # the byte taps' count, said again at the very end

    def ped_connect(self, title: str, port: int) -> Result:
        """`hsm ped connect` to a pedserver of this demo on loopback."""
        return self.run(title, "pedhsm", "hsm", "ped", "connect", "--ip", "127.0.0.1",
                        "--port", str(port))

    def start_pedserver(self, title: str, home: Path, device: str) -> int:
        """pedserver on 127.0.0.1 and a free port; another port if that one was taken
        meanwhile (the kernel chose it free, someone may have bound it since)."""
        for attempt in range(3):
            port = free_port()
            try:
                self.start(
                    title,
                    "pedserver",
                    home,
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--device",
                    device,
                    "--log-level",
                    self.log_level,
                )
                return port
            except DemoFailed as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.say("    (port taken meanwhile: trying another)")
        raise AssertionError("unreachable")

    def workstation(self, title: str, tag: str, home: Path, keyring: Path, pins: Path) -> int:
        """A watched PED (auto operator answering from *pins*) behind a byte tap, pedserver
        using it, and a byte tap in front of pedserver: the port an HSM connects to."""
        ped = self.start_ped(
            f"{title} PED", tag, "--keyring", str(keyring), "--operator", "auto",
            "--pin-file", str(pins), *REMOTE_OPTIONS, "--log-level", self.log_level,
        )
        device = self.taps.unix(f"pedserver <-> {title} PED", self.root / f"tap-{tag}.sock", ped)
        self.say(f"(a byte tap on {self.short(str(device))} records every byte between "
                 "pedserver and the PED)")
        port = self.start_pedserver(f"{title} pedserver start", home, f"socket:{device}")
        tapped = self.taps.tcp(f"pedclient <-> {title} pedserver", port)
        self.say(f"(a byte tap on 127.0.0.1:{tapped} records every byte between pedclient "
                 f"and pedserver, port {port}: the HSM connects through it)")
        return tapped

    # -- the flow ------------------------------------------------------------------------
    def flow(self) -> None:
        site = self.site
        keyring = self.root / "keyring"
        pins = self.root / "pins.txt"
        wrong_pins = self.root / "wrong-pins.txt"
        challenge = self.root / "challenge.txt"
        server_home = site.home("pedserver")
        client_home = site.home("pedclient")
        hsm_home = site.home("pedhsm")
        site.env.update(
            PEDSERVER_HOME=str(server_home),
            PEDCLIENT_HOME=str(client_home),
            PEDHSM_HOME=str(hsm_home),
        )

        self.say(f"$ export DEMO={self.root}")
        self.say('$ export PEDSERVER_HOME="$DEMO/home-pedserver" '
                 'PEDCLIENT_HOME="$DEMO/home-pedclient" PEDHSM_HOME="$DEMO/home-pedhsm"')
        self.say("(each command below pastes as shown; `--dir DIR` keeps the directory)")

        self.section("1. The PED keys: a keyring of blank keys, and the operators' PED PINs")
        self.run("blank keys", "pedkey", "blank", "--count", str(BLANKS), "--dir", str(keyring))
        pin_of = {label: _random_pin() for label in LABELS}
        _write_private(pins, "".join(f"{label} = {pin}\n" for label, pin in pin_of.items()))
        wrong = _random_pin()
        while wrong == pin_of["HSM SO"]:
            wrong = _random_pin()
        _write_private(
            wrong_pins,
            "".join(
                f"{label} = {wrong if label == 'HSM SO' else pin}\n"
                for label, pin in pin_of.items()
            ),
        )
        _write_private(challenge, secrets.token_urlsafe(18) + "\n")
        self.say(f"(random PED PINs for {len(LABELS)} key labels in $DEMO/pins.txt, owner-only;")
        self.say(" a second operator's copy with a mistyped HSM SO PIN in $DEMO/wrong-pins.txt;")
        self.say(" a random challenge secret in $DEMO/challenge.txt. None is ever printed.)")

        self.section("2. The PED workstation: a PED (auto operator), pedserver on 127.0.0.1")
        port = self.workstation("workstation", "ws", server_home, keyring, pins)

        self.section("3. The HSM host: pedclient, and the HSM with a PED cabled to it")
        log = ("--log-level", self.log_level)
        self.start("pedclient start", "pedclient", client_home, *log)
        endpoint = self.taps.unix(
            "HSM <-> pedclient", self.root / "tap-hsm.sock", client_home / "pedclient.sock"
        )
        self.say(f"(a byte tap on {self.short(str(endpoint))} records every byte between "
                 "the HSM and pedclient)")
        local = self.start_ped(
            "HSM's cabled PED", "hsm", "--keyring", str(keyring), "--mode", "local",
            "--operator", "auto", *log,
        )
        self.start(
            "pedhsm start",
            "pedhsm",
            hsm_home,
            "--serial",
            HSM_SERIAL,
            "--local-ped",
            f"socket:{local}",
            "--pedclient",
            str(endpoint),
        )

        self.section("4. The Remote PED Vector: an orange key imprinted on the local PED")
        r = self.run("RPV init", "pedhsm", "hsm", "ped", "vector", "init")
        self.expect(r, "Remote PED Vector set")

        self.section("5. Across the network: the HSM connects to the remote PED (orange key)")
        r = self.ped_connect("ped connect", port)
        self.expect(r, "Remote PED connected")
        self.run("ped show", "pedhsm", "hsm", "ped", "show")
        self.run("pedserver show", "pedserver", "mode", "show")

        self.section("6. HSM initialisation on the remote PED: blue 2 of 3 with a PIN, red")
        r = self.run("hsm init", "pedhsm", "hsm", "init", "--label", HSM_LABEL)
        self.expect(r, "initialised")
        r = self.run("hsm login", "pedhsm", "hsm", "login")
        self.expect(r, "HSM SO logged in")

        self.section("7. A partition, its SO, a Crypto Officer with a black key and a challenge")
        self.run("partition create", "pedhsm", "partition", "create", "--name", PARTITION)
        self.run("partition init", "pedhsm", "partition", "init", "--name", PARTITION)
        self.run(
            "partition SO login",
            "pedhsm",
            "role",
            "login",
            "--partition",
            PARTITION,
            "--name",
            "so",
        )
        self.run(
            "allow activation",
            "pedhsm",
            "partition",
            "changepolicy",
            "--name",
            PARTITION,
            "--policy",
            "22",
            "--value",
            "1",
        )
        self.run(
            "CO init",
            "pedhsm",
            "role",
            "init",
            "--partition",
            PARTITION,
            "--name",
            "co",
            "--challenge-file",
            str(challenge),
        )
        self.run("partition SO logout", "pedhsm", "role", "logout", "--partition", PARTITION)

        self.section("8. The Crypto Officer: PED login, activation, then logins with no PED")
        co_login = (
            "role",
            "login",
            "--partition",
            PARTITION,
            "--name",
            "co",
            "--challenge-file",
            str(challenge),
        )
        r = self.run("CO login (black key)", "pedhsm", *co_login)
        self.expect(r, "Please attend to the PED", "logged in")
        self.run(
            "CO activate", "pedhsm", "role", "activate", "--partition", PARTITION, "--name", "co"
        )
        self.run(
            "object create",
            "pedhsm",
            "object",
            "create",
            "--partition",
            PARTITION,
            "--label",
            "demo-key",
        )
        self.run("CO logout", "pedhsm", "role", "logout", "--partition", PARTITION)
        r = self.run("CO login (activated)", "pedhsm", *co_login)
        if "Please attend to the PED" in r.output:
            raise DemoFailed("an activated Crypto Officer should log in without the PED")
        self.run("object list", "pedhsm", "object", "list", "--partition", PARTITION)

        self.section("9. A wrong PED PIN: a second PED whose operator mistypes the SO's PIN")
        second_home = site.home("pedserver-2")
        self.run("HSM SO logout", "pedhsm", "hsm", "logout")
        port2 = self.workstation("second", "ws2", second_home, keyring, wrong_pins)
        self.run("ped disconnect", "pedhsm", "hsm", "ped", "disconnect")
        self.ped_connect("ped connect (second PED)", port2)
        r = self.run("hsm login, wrong PIN", "pedhsm", "hsm", "login", expect=1)
        self.expect(r, "1 consecutive failure(s) of 3")
        r = self.run("hsm show", "pedhsm", "hsm", "show")
        self.expect(r, "SO login attempts left: 2")
        self.run("ped disconnect", "pedhsm", "hsm", "ped", "disconnect")
        self.run("second pedserver stop", "pedserver", "mode", "stop", "--home", str(second_home))
        site.stop("pedserver", second_home)

        self.section("10. Back at the first PED: the right PIN resets the counter; disconnect")
        self.ped_connect("ped connect", port)
        self.run("hsm login", "pedhsm", "hsm", "login")
        r = self.run("hsm show", "pedhsm", "hsm", "show")
        self.expect(r, "SO login attempts left: 3")
        self.run("audit log verify", "pedhsm", "audit", "log", "verify")
        r = self.run("ped disconnect", "pedhsm", "hsm", "ped", "disconnect")
        self.expect(r, "Remote PED disconnected")
        self.run("the keys", "pedkey", "list", str(keyring))

        self.section("11. Shutting down")
        self.run("pedhsm stop", "pedhsm", "mode", "stop")
        self.run("pedclient stop", "pedclient", "mode", "stop")
        self.run("pedserver stop", "pedserver", "mode", "stop")
        for prog, home in (
            ("pedhsm", hsm_home),
            ("pedclient", client_home),
            ("pedserver", server_home),
        ):
            site.stop(prog, home)  # already stopped: this waits until the process is gone

        self.section("12. What the relays saw: every byte through the taps, searched")
        self.taps.wait_ended()  # the daemons closed every connection: all bytes are in
        self.prove_ciphertext_only(keyring, pins, wrong_pins, challenge)

    def prove_ciphertext_only(
        self, keyring: Path, pins: Path, wrong_pins: Path, challenge: Path
    ) -> None:
        """Search every tapped byte for every secret of the keyring; print the count."""
        width = max(len(name) for name in self.taps.taps)
        for name, tap in self.taps.taps.items():
            self.say(f"  {name:<{width}}  {len(tap.up) + len(tap.down):>9,} bytes, "
                     f"{tap.connections} connection(s)")
        records = self.taps.records()
        needles = secrets_of(
            keyring,
            {"": read_pin_file(pins), "mistyped ": read_pin_file(wrong_pins)},
            {"challenge secret": challenge.read_text().strip().encode()},
        )
        hits = find(needles, records)
        total = sum(len(data) for data in records.values())
        self.say(
            f"Searched for {len(needles)} secrets (every key's share, each keyset's secret "
            "and login secret, the RPV, the PED PINs, the challenge; raw, hex and base64)."
        )
        self.proof = (
            f"Byte taps: {total:,} bytes relayed, {len(needles)} secrets searched, "
            f"{len(hits)} found."
        )
        self.say(self.proof)
        if hits:
            raise DemoFailed("secrets in the bytes the relays saw: " + ", ".join(hits))

    def summary(self, started: float) -> None:
        self.section("Summary")
        width = max(len(s.title) for s in self.steps)
        for s in self.steps:
            mark = "ok" if s.result.code == 0 else f"exit {s.result.code} (expected)"
            self.say(f"  {s.number:2d}. {s.title:<{width}}  {s.result.seconds:6.2f} s  {mark}")
        ped_steps = [
            s
            for s in self.steps
            if "Please attend to the PED" in s.result.output or "orange PED Key" in s.result.output
        ]
        self.say()
        self.say(
            f"{len(self.steps)} commands in {time.monotonic() - started:.1f} s; "
            f"{len(ped_steps)} of them used a PED: the orange key's imprint on the PED cabled "
            "to the HSM, every other one on a PED across the network."
        )
        self.say(self.proof)
