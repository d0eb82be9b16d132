"""A Backup HSM set up as processes: two pedhsm (one ``--backup``) and hsmclient between them.

Used by the crash test (``tests/backup/test_crash_process.py``) and the bench's
backup/restore figure (`pedtools.bench.backup`).  Everything is done with the programs'
own commands, in a `pedtools.testing.Site`:

* the source pedhsm (serial 170001) with its cabled PED emulated (auto operator, keyring
  ``keys``), partition ``p1`` joined to the HSM's own cloning domain (``partition init
  --domain-from-red-key``: the auto operator presents the first red key of its keyring,
  the HSM's), policies 22 and 23 on (a restart keeps the Crypto Officer activated);
* the Backup HSM (``pedhsm mode start --backup``, serial 170003, keyring
  ``keys-backup``), initialised, its SO logged in (`login_backup` again after each of
  its restarts); a copy of the source's red key is put first in its keyring, as the
  person who carries the red key to the Backup HSM's PED would;
* hsmclient registered with both and serving; `slots` names the slot ids (``p1`` and
  ``admin``: the Backup HSM's admin slot).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
from pathlib import Path
from typing import Any

import trio

from hsmclient.remote import RemoteBackend
from hsmclient.settings import Layout
from hsmclient.slots import SlotMap
from keys import Keyring
from keys.colors import Color
from keys.image import IMAGE_SUFFIX
from ped.daemon.control import control_request_sync
from ped.pkcs11.constants import CKA, CKM, CKU
from ped.pkcs11.token import Attribute, Mechanism
from ped.tls import PinStore
from pedtools.testing.procs import Result, Site, SiteError, free_port, program, write_private

SOURCE_SERIAL = "170001"
BACKUP_SERIAL = "170003"
CLIENT = "apphost"
P256 = bytes.fromhex("06082a8648ce3d030107")



class BackupSite:
    """The source HSM, the Backup HSM and hsmclient in *site* (see the module docstring)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.keyrings = {"source": site.root / "keys", "backup": site.root / "keys-backup"}
        self.homes = {"source": site.home("source"), "backup": site.home("backup")}
        self.client_home = site.home("hsmclient")
        self.challenge = secrets.token_urlsafe(18)
        self.challenge_file = write_private(site.root / "challenge.txt", self.challenge + "\n")
        self.ports = {"source": free_port(), "backup": free_port()}
        self.slots: dict[str, int] = {}

    # -- running -----------------------------------------------------------------------
    def hsm(self, which: str, *args: str) -> Result:
        return self.site.run("pedhsm", "--home", str(self.homes[which]), *args)

    def hsmclient(self, *args: str) -> Result:
        return self.site.run("hsmclient", *args, "--home", str(self.client_home))

    def must(self, result: Result) -> str:
        return result.must()

    def start_hsm(self, which: str) -> None:
        extra = ["--backup"] if which == "backup" else []
        serial = BACKUP_SERIAL if which == "backup" else SOURCE_SERIAL
        keys = self.keyrings[which]
        self.site.start("pedhsm", self.homes[which], "--serial", serial, "--local-ped",
                        f"emulated:{keys}?mode=local&operator=auto", "--ntls-ip",
                        "127.0.0.1", "--ntls-port", str(self.ports[which]), *extra)  # fmt: skip

    def start_client(self) -> None:
        self.site.start("hsmclient", self.client_home)

    def login_backup(self) -> None:
        self.must(self.hsm("backup", "hsm", "login"))

    def pid(self, which: str) -> int:
        """The running daemon's pid: ``source``, ``backup`` or ``hsmclient``."""
        path = (self.client_home / "hsmclient.pid" if which == "hsmclient"
                else self.homes[which] / "pedhsm.pid")  # fmt: skip
        return int(path.read_text().split()[0])

    def kill(self, which: str) -> None:
        """SIGKILL, then wait until it is gone (its pid file stays: a crash leaves it)."""
        pid = self.pid(which)
        home = self.client_home if which == "hsmclient" else self.homes[which]
        # Started again by `restart`: the site stops the new one, not this one, at close.
        self.site.daemons = [d for d in self.site.daemons if d.home != home]
        os.kill(pid, signal.SIGKILL)
        while True:
            try:
                os.kill(pid, 0)
                gone = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
            except (ProcessLookupError, OSError):
                gone = True
            if gone:
                return
            os.sched_yield()

    def restart(self, which: str) -> None:
        """Start again after `kill` (the Backup HSM's SO logs in again: RAM is gone)."""
        if which == "hsmclient":
            self.start_client()
            return
        self.start_hsm(which)
        if which == "backup":
            self.login_backup()

    # -- the set-up --------------------------------------------------------------------
    def up(self) -> None:
        for keys in self.keyrings.values():
            self.must(self.site.run("pedkey", "blank", "--count", "6", "--dir", str(keys)))
        challenge = ("--challenge-file", str(self.challenge_file))
        self.start_hsm("source")
        self.start_hsm("backup")
        for step in (
            ("hsm", "init", "--label", "source"),
            ("hsm", "login"),
            ("partition", "create", "--name", "p1"),
            ("partition", "init", "--name", "p1", "--domain-from-red-key"),
            ("role", "login", "--partition", "p1", "--name", "so"),
            ("partition", "changepolicy", "--name", "p1", "--policy", "22", "--value", "1"),
            ("partition", "changepolicy", "--name", "p1", "--policy", "23", "--value", "1"),
            ("role", "init", "--partition", "p1", "--name", "co", *challenge),
            ("role", "logout", "--partition", "p1"),
            ("role", "activate", "--partition", "p1", "--name", "co"),
        ):
            self.must(self.hsm("source", *step))
        self.must(self.hsm("backup", "hsm", "init", "--label", "backup"))
        self.login_backup()
        self.carry_red_key()
        root = self.site.root
        client_pem = root / "apphost.pem"
        self.must(self.hsmclient("certificate", "export", str(client_pem)))
        for which, server in (("source", "hsm1"), ("backup", "hsm3")):
            self.must(self.hsm(which, "client", "register", "--name", CLIENT, "--certificate",
                               str(client_pem)))  # fmt: skip
            if which == "source":
                self.must(self.hsm(which, "client", "assignpartition", "--client", CLIENT,
                                   "--partition", "p1"))  # fmt: skip
            pem = root / f"{server}.pem"
            self.must(self.hsm(which, "ntls", "certificate", "export", str(pem)))
            self.must(self.hsmclient("server", "register", "--name", server, "--certificate",
                                     str(pem), "--ip", "127.0.0.1", "--port",
                                     str(self.ports[which])))  # fmt: skip
        self.start_client()
        rows = json.loads(self.must(self.hsmclient("slot", "list", "--json")))["slots"]
        for row in rows:
            label = row.get("label", "")
            key = "admin" if label.startswith("backup HSM") else label
            if row.get("slot_id") is not None:
                self.slots[key] = int(row["slot_id"])
        if not {"p1", "admin"} <= set(self.slots):
            raise SiteError(f"hsmclient's slots are not the site's: {rows}")

    def carry_red_key(self) -> None:
        """The source's domain key (its keyring's first red key) first in the Backup HSM's."""
        red = next(e for e in Keyring(self.keyrings["source"]).entries()
                   if e.header is not None and not e.header.blank
                   and e.header.color is Color.RED)  # fmt: skip
        shutil.copyfile(red.path, self.keyrings["backup"] / f"a-carried{IMAGE_SUFFIX}")

    # -- the commands --------------------------------------------------------------------
    def archive_argv(self, op: str, *args: str) -> list[str]:
        return [*program("hsmclient"), "partition", "archive", op, "--home",
                str(self.client_home), "--slot", str(self.slots["admin"]), *args]  # fmt: skip

    def archive(self, op: str, *args: str) -> Result:
        argv = self.archive_argv(op, *args)
        return self.site.run("hsmclient", *argv[len(program("hsmclient")):])

    def request(self, op: str, partition: str, slot: str, *, mode: str | None = None,
                timeout: float = 120.0) -> dict[str, Any]:
        """What ``partition archive backup|restore`` asks hsmclient's daemon, asked directly
        (no command-line start-up); the daemon's answer (``{"error": ...}`` on failure)."""
        request = {"op": op, "slot": self.slots["admin"], "partition": partition,
                   "password": self.challenge, "mode": mode, "objects": [],
                   "source_slot": self.slots[slot], "target_slot": self.slots[slot]}  # fmt: skip
        return control_request_sync(Layout(self.client_home).control, "archive", request,
                                    timeout=timeout, what="hsmclient")  # fmt: skip

    def backup_args(self, name: str, *more: str) -> list[str]:
        return ["--source-slot", str(self.slots["p1"]), "--partition", name,
                "--password-file", str(self.challenge_file), *more]  # fmt: skip

    def restore_args(self, name: str, slot: str, *more: str) -> list[str]:
        return ["--partition", name, "--target-slot", str(self.slots[slot]),
                "--password-file", str(self.challenge_file), *more]  # fmt: skip

    def listing(self) -> list[dict[str, object]]:
        rows = json.loads(self.must(self.archive("list", "--json")))
        assert isinstance(rows, list)
        return rows

    def make_keys(self, partition: str, count: int, prefix: str) -> None:
        """*count* P-256 key pairs on *partition* (through hsmclient's identity, in process)."""
        trio.run(self._make_keys, partition, count, prefix)

    async def _make_keys(self, partition: str, count: int, prefix: str) -> None:
        pins = PinStore(self.client_home, program="hsmclient")
        backend = RemoteBackend(self.client_home, pins, SlotMap(self.client_home))
        app = await backend.connect()
        try:
            slot = next(s.slot_id for s in await app.slots()
                        if s.token_present
                        and f"partition {partition} " in s.description)  # fmt: skip
            session = await app.open_session(slot, True)
            await app.login(session, CKU.USER, bytearray(self.challenge.encode()))
            for i in range(count):
                label = f"{prefix}-{i:03d}".encode()
                public = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, label),
                          Attribute(CKA.EC_PARAMS, P256), Attribute(CKA.VERIFY, True)]  # fmt: skip
                private = [Attribute(CKA.TOKEN, True), Attribute(CKA.LABEL, label),
                           Attribute(CKA.PRIVATE, True), Attribute(CKA.SENSITIVE, True),
                           Attribute(CKA.SIGN, True)]  # fmt: skip
                await app.generate_key_pair(session, Mechanism(CKM.EC_KEY_PAIR_GEN),
                                            public, private)  # fmt: skip
        finally:
            await app.close()
            await backend.aclose()
