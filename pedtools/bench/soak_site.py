"""The soak's processes: pedhsm on a remote PED (pedclient, pedserver, emulated PED) and hsmclient.

Built with the programs' own commands on top of `pedtools.bench.clientpath_site` (pedhsm
with an activated partition on its client listener, hsmclient registered with it), plus
the remote PED: pedclient and pedserver (one emulated PED, auto operator) started in the
same `pedtools.testing.Site`, pedhsm pointed at that pedclient (``PEDCLIENT_HOME``), the
RPV made on pedhsm's cabled PED and ``hsm ped connect`` to pedserver.  `pids` names each
daemon's process for sampling, `logs` each daemon's log file.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from pedtools.bench.clientpath_site import P11KIT_CLIENT, ClientPathSite
from pedtools.bench.procs import children_of
from pedtools.testing.procs import Site, SiteError, free_port

#: The label of the partition's signing key the soak makes.
LABEL = "soak-key"
#: The daemons the soak samples, in the order the report lists them.
DAEMONS = ("pedhsm", "pedclient", "pedserver", "pedemu", "hsmclient")


class SoakSite:
    """Every daemon of both paths, up and connected (see the module docstring)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.cps = ClientPathSite(site)
        self.pedclient_home = site.home("pedclient")
        self.pedserver_home = site.home("pedserver")
        # pedhsm's --pedclient defaults to the socket in pedclient's home.
        site.env["PEDCLIENT_HOME"] = str(self.pedclient_home)
        self.ped_port = 0

    @property
    def hsm_control(self) -> Path:
        return self.cps.hsm_home / "control.sock"

    def up(self) -> None:
        cps, site = self.cps, self.site
        if not P11KIT_CLIENT.exists():
            raise SiteError(f"{P11KIT_CLIENT} is missing: apt-get install p11-kit-modules")
        site.start("pedclient", self.pedclient_home)
        cps.up()
        cps.register()
        self._keygen()
        self.ped_port = free_port()
        site.start("pedserver", self.pedserver_home, "--ip", "127.0.0.1", "--port",
                   str(self.ped_port), "--device", f"emulated:{cps.keys}?operator=auto")
        cps.must(cps.hsm("hsm", "ped", "vector", "init"))
        cps.must(cps.hsm("hsm", "ped", "connect", "-ip", "127.0.0.1", "-port",
                         str(self.ped_port)))

    def _keygen(self) -> None:
        cps = self.cps
        done = subprocess.run(
            ["pkcs11-tool", "--module", str(P11KIT_CLIENT), "--login", "--pin", cps.challenge,
             "--keypairgen", "--key-type", "EC:prime256v1", "--label", LABEL],
            env=cps.app_env(), capture_output=True, text=True, timeout=120, check=False,
        )
        if done.returncode != 0:  # (pkcs11-tool never prints the PIN it was given)
            raise SiteError(f"pkcs11-tool --keypairgen failed: {done.stdout}{done.stderr}")

    def pids(self, timeout: float = 30.0) -> dict[str, int]:
        """Each daemon's process id; the emulated PED is pedserver's child, started by
        the first operation on it (so call this after one login)."""
        found: dict[str, int] = {}
        for daemon in self.site.daemons:
            if daemon.pid is not None:
                found[daemon.name] = daemon.pid
        missing = [name for name in DAEMONS if name != "pedemu" and name not in found]
        if missing:
            raise SiteError(f"no process id for {', '.join(missing)}")
        deadline = time.monotonic() + timeout
        while True:
            kids = children_of(found["pedserver"])
            if kids:
                found["pedemu"] = kids[0]
                break
            if time.monotonic() > deadline:
                raise SiteError("pedserver started no emulated PED process")
            time.sleep(0.05)
        return {name: found[name] for name in DAEMONS}

    def logs(self) -> dict[str, Path | None]:
        """Each daemon's log at its default level (the emulated PED has none of its own).
        pedhsm's audit log is not a log level's output: see `audit_log`."""
        return {"pedhsm": self.cps.hsm_home / "pedhsm.log",
                "pedclient": self.pedclient_home / "pedclient.log",
                "pedserver": self.pedserver_home / "pedserver.log",
                "pedemu": None,
                "hsmclient": self.cps.client_home / "hsmclient.log"}

    @property
    def audit_log(self) -> Path:
        return self.cps.hsm_home / "audit.log"
