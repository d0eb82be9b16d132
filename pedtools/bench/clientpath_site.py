"""The client path set up as processes: an activated partition on pedhsm, hsmclient serving it.

Used by the end-to-end test (``tests/system/test_client_path_e2e.py``) and the bench's
client-path figure (`pedtools.bench.clientpath`).  Everything is done with the programs'
own commands, as README's section "The client path: PKCS#11 applications" shows them,
in a `pedtools.testing.Site`:

* pedhsm with its cabled PED emulated (auto operator) and its client listener on a free
  loopback port (standing for 1792); the HSM initialised, a partition with its SO, policy
  22 on, a Crypto Officer with a black key and a random challenge secret, activated with
  its black key (`up`);
* hsmclient's certificate registered on pedhsm (``client register``), the partition
  assigned to it, pedhsm's NTLS certificate registered on hsmclient (``server register``,
  at a port the caller may choose: a byte tap in front of the listener), hsmclient
  started; `address` is the ``P11_KIT_SERVER_ADDRESS`` an application uses (`connect`).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from pedtools.testing.procs import Result, Site, SiteError, free_port, write_private

#: Debian's p11-kit client module: what an application loads as its PKCS#11 module.
P11KIT_CLIENT = Path("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
HSM_SERIAL = "160001"
PARTITION = "app"
CLIENT = "apphost"
SERVER = "hsm1"
_ADDRESS = re.compile(r"P11_KIT_SERVER_ADDRESS=(unix:path=\S+)")



class ClientPathSite:
    """pedhsm + hsmclient in *site* (see the module docstring)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.keys = site.root / "keys"
        self.hsm_home = site.home("pedhsm")
        self.client_home = site.home("hsmclient")
        self.challenge = secrets.token_urlsafe(18)
        self.challenge_file = write_private(site.root / "challenge.txt", self.challenge + "\n")
        self.ntls_port = 0
        self.address = ""

    # -- running ---------------------------------------------------------------------
    def hsm(self, *args: str) -> Result:
        return self.site.run("pedhsm", "--home", str(self.hsm_home), *args)

    def hsmclient(self, *args: str) -> Result:
        return self.site.run("hsmclient", *args, "--home", str(self.client_home))

    def must(self, result: Result) -> str:
        return result.must()

    # -- the HSM host ------------------------------------------------------------------
    def up(self, *, ntls_port: int | None = None) -> None:
        """pedhsm listening for clients; the partition's CO initialised and activated."""
        site = self.site
        self.must(site.run("pedkey", "blank", "--count", "8", "--dir", str(self.keys)))
        self.ntls_port = ntls_port or free_port()
        site.start(
            "pedhsm",
            self.hsm_home,
            "--serial",
            HSM_SERIAL,
            "--local-ped",
            f"emulated:{self.keys}?mode=local&operator=auto",
            "--ntls-ip",
            "127.0.0.1",
            "--ntls-port",
            str(self.ntls_port),
        )
        challenge = ("--challenge-file", str(self.challenge_file))
        for args in (
            ("hsm", "init", "--label", "client-path"),
            ("hsm", "login"),
            ("partition", "create", "--name", PARTITION),
            ("partition", "init", "--name", PARTITION),
            ("role", "login", "--partition", PARTITION, "--name", "so"),
            ("partition", "changepolicy", "--name", PARTITION, "--policy", "22", "--value", "1"),
            ("role", "init", "--partition", PARTITION, "--name", "co", *challenge),
            ("role", "logout", "--partition", PARTITION),
            ("role", "activate", "--partition", PARTITION, "--name", "co"),  # the black key
        ):
            self.must(self.hsm(*args))

    # -- the application host ----------------------------------------------------------
    def register(self, *, server_port: int | None = None, start: bool = True) -> None:
        """Each side's certificate registered on the other, the partition assigned,
        hsmclient started (it dials *server_port*, pedhsm's listener by default)."""
        root = self.site.root
        client_pem, server_pem = root / "apphost.pem", root / "hsm1.pem"
        self.must(self.hsmclient("certificate", "export", str(client_pem)))
        self.must(self.hsm("client", "register", "--name", CLIENT, "--certificate",
                           str(client_pem)))
        self.must(self.hsm("client", "assignpartition", "--client", CLIENT, "--partition",
                           PARTITION))
        self.must(self.hsm("ntls", "certificate", "export", str(server_pem)))
        self.must(self.hsmclient("server", "register", "--name", SERVER, "--certificate",
                                 str(server_pem), "--ip", "127.0.0.1", "--port",
                                 str(server_port or self.ntls_port)))
        if start:
            self.start_client()

    def start_client(self) -> None:
        self.site.start("hsmclient", self.client_home)
        shown = self.must(self.hsmclient("mode", "show"))
        found = _ADDRESS.search(shown)
        if found is None:
            raise SiteError(f"`hsmclient mode show` names no P11_KIT_SERVER_ADDRESS:\n{shown}")
        self.address = found.group(1)

    def app_env(self) -> dict[str, str]:
        """The environment an application needs to reach hsmclient."""
        return {**self.site.env, "P11_KIT_SERVER_ADDRESS": self.address}
