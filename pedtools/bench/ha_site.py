"""An HA group set up as processes: three pedhsm HSMs of one cloning domain, hsmclient
serving the group's virtual slot.

Used by the HA end-to-end test (``tests/ha/test_ha_processes.py``) and the bench's HA
figure (`pedtools.bench.ha`).  Everything is done with the programs' own commands, in a
`pedtools.testing.Site`:

* each pedhsm with its cabled PED emulated (auto operator, its own key directory) and
  its client listener on a free loopback port; the HSM initialised; partition ``app``
  with its SO, policies 22 and 23 (activation, auto-activation: it stays activated when
  its process is killed and started again), a Crypto Officer with a black key and the
  site's challenge, activated;
* the first partition imprints a new red key (a new cloning domain); the others read it
  (``partition init --domain-from-red-key``): its key file is copied into their key
  directory and their own red keys are set aside while they read it, so the auto
  operator presents the first one's;
* hsmclient registered with each pedhsm (``client register``, ``assignpartition``), each
  pedhsm with hsmclient (``server register``), hsmclient started; `group` makes the HA
  group with ``hagroup creategroup`` and ``addmember``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal

from keys import Keyring
from keys.colors import Color
from pedtools.bench.clientpath_site import P11KIT_CLIENT
from pedtools.testing.procs import Result, Site, SiteError, free_port, write_private

PARTITION = "app"
CLIENT = "apphost"
GROUP = "ha1"
_ADDRESS = re.compile(r"P11_KIT_SERVER_ADDRESS=(unix:path=\S+)")
_SLOT = re.compile(r"virtual slot (\d+)")

__all__ = ["GROUP", "P11KIT_CLIENT", "HaSite"]



class HaSite:
    """*count* pedhsm + hsmclient in *site* (see the module docstring)."""

    def __init__(self, site: Site, count: int = 3) -> None:
        self.site = site
        self.names = [f"hsm{i + 1}" for i in range(count)]
        self.keys = {n: site.root / f"keys-{n}" for n in self.names}
        self.homes = {n: site.home(f"pedhsm-{n}") for n in self.names}
        self.ports = {n: 0 for n in self.names}
        self.client_home = site.home("hsmclient")
        self.challenge = secrets.token_urlsafe(18)
        self.challenge_file = write_private(site.root / "challenge.txt", self.challenge + "\n")
        self.address = ""
        self.slots: dict[str, int] = {}
        self.group_slot = -1

    # -- running ---------------------------------------------------------------------
    def hsm(self, name: str, *args: str) -> Result:
        return self.site.run("pedhsm", "--home", str(self.homes[name]), *args)

    def hsmclient(self, *args: str) -> Result:
        return self.site.run("hsmclient", *args, "--home", str(self.client_home))

    def must(self, result: Result) -> str:
        return result.must()

    # -- the HSM hosts ---------------------------------------------------------------------
    def start_hsm(self, name: str) -> None:
        """Start (or start again, on the same port) pedhsm *name*."""
        self.site.start(
            "pedhsm", self.homes[name], "--serial", f"17000{self.names.index(name) + 1}",
            "--local-ped", f"emulated:{self.keys[name]}?mode=local&operator=auto",
            "--ntls-ip", "127.0.0.1", "--ntls-port", str(self.ports[name]),
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9 pedhsm *name* (no goodbye to anyone)."""
        for daemon in list(self.site.daemons):
            if daemon.name == "pedhsm" and daemon.home == self.homes[name]:
                assert daemon.pid is not None
                os.kill(daemon.pid, signal.SIGKILL)
                self.site.daemons.remove(daemon)
                return
        raise SiteError(f"pedhsm {name} is not running")

    def up(self) -> None:
        for name in self.names:
            self._up(name, join=name != self.names[0])

    def _up(self, name: str, *, join: bool) -> None:
        self.must(self.site.run("pedkey", "blank", "--count", "8", "--dir", str(self.keys[name])))
        self.ports[name] = free_port()
        self.start_hsm(name)
        first: list[tuple[str, ...]] = [("hsm", "init", "--label", name), ("hsm", "login"),
                                        ("partition", "create", "--name", PARTITION)]
        for args in first:
            self.must(self.hsm(name, *args))
        if join:
            self._join_domain(name)
        else:
            self.must(self.hsm(name, "partition", "init", "--name", PARTITION))
        challenge = ("--challenge-file", str(self.challenge_file))
        then: list[tuple[str, ...]] = [
            ("role", "login", "--partition", PARTITION, "--name", "so"),
            ("partition", "changepolicy", "--name", PARTITION, "--policy", "22", "--value", "1"),
            ("partition", "changepolicy", "--name", PARTITION, "--policy", "23", "--value", "1"),
            ("role", "init", "--partition", PARTITION, "--name", "co", *challenge),
            ("role", "logout", "--partition", PARTITION),
            ("role", "activate", "--partition", PARTITION, "--name", "co"),  # the black key
        ]
        for args in then:
            self.must(self.hsm(name, *args))

    def _join_domain(self, name: str) -> None:
        """``partition init --domain-from-red-key`` with the first HSM's red key inserted."""
        first = self.keys[self.names[0]]
        domain = [e.path for e in Keyring(first).entries()
                  if e.header is not None and e.header.color is Color.RED
                  and e.header.label == f"Partition domain {PARTITION}"]  # fmt: skip
        if not domain:
            raise SiteError(f"no red key 'Partition domain {PARTITION}' in {first}")
        aside = self.site.root / f"aside-{name}"
        aside.mkdir()
        own = [e.path for e in Keyring(self.keys[name]).entries()
               if e.header is not None and e.header.color is Color.RED]  # fmt: skip
        for path in own:
            shutil.move(path, aside / path.name)
        copies = [self.keys[name] / f"joined-{p.name}" for p in domain]
        for src, dst in zip(domain, copies, strict=True):
            shutil.copy2(src, dst)
        try:
            self.must(self.hsm(name, "partition", "init", "--name", PARTITION,
                               "--domain-from-red-key"))  # fmt: skip
        finally:
            for path in own:
                shutil.move(aside / path.name, path)

    # -- the application host ----------------------------------------------------------
    def register(self) -> None:
        root = self.site.root
        client_pem = root / "apphost.pem"
        self.must(self.hsmclient("certificate", "export", str(client_pem)))
        for name in self.names:
            server_pem = root / f"{name}.pem"
            self.must(self.hsm(name, "client", "register", "--name", CLIENT, "--certificate",
                               str(client_pem)))  # fmt: skip
            self.must(self.hsm(name, "client", "assignpartition", "--client", CLIENT,
                               "--partition", PARTITION))  # fmt: skip
            self.must(self.hsm(name, "ntls", "certificate", "export", str(server_pem)))
            self.must(self.hsmclient("server", "register", "--name", name, "--certificate",
                                     str(server_pem), "--ip", "127.0.0.1", "--port",
                                     str(self.ports[name])))  # fmt: skip
        self.site.start("hsmclient", self.client_home)
        shown = self.must(self.hsmclient("mode", "show"))
        found = _ADDRESS.search(shown)
        if found is None:
            raise SiteError(f"`hsmclient mode show` names no P11_KIT_SERVER_ADDRESS:\n{shown}")
        self.address = found.group(1)
        listed = self.must(self.hsmclient("slot", "list"))
        for line in listed.splitlines():
            words = line.split()
            if words and words[0].isdigit():
                for name in self.names:
                    if name in words:
                        self.slots[name] = int(words[0])
        if sorted(self.slots) != self.names:
            raise SiteError(f"`hsmclient slot list` does not show every member:\n{listed}")

    def group(self, members: int | None = None) -> int:
        """``hagroup creategroup`` on the first member, ``addmember`` the others."""
        names = self.names[: members or len(self.names)]
        password = ("--password-file", str(self.challenge_file))
        said = self.must(self.hsmclient("hagroup", "creategroup", "--label", GROUP, "--slot",
                                        str(self.slots[names[0]]), *password))  # fmt: skip
        found = _SLOT.search(said)
        assert found is not None, said
        self.group_slot = int(found.group(1))
        for name in names[1:]:
            self.must(self.hsmclient("hagroup", "addmember", "--group", GROUP, "--slot",
                                     str(self.slots[name]), *password))  # fmt: skip
        return self.group_slot

    def app_env(self) -> dict[str, str]:
        return {**self.site.env, "P11_KIT_SERVER_ADDRESS": self.address}
