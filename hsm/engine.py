"""The emulated HSM put together: its state, its one login service and its command groups.

Theory of operation
-------------------
`Hsm` is the composition root.  It builds, once per power-on:

* `hsm.state.HsmState`: the durable state (SQLite, committed before a result is
  reported), the device key, the audit log and the RAM of the powered HSM;
* `hsm.logins.LoginService`: the one place where a login is checked, a failure counted
  (committed *before* the secret is tried) and a threshold applied;
* `hsm.activation.Activation`: the activation cache (policies 22 and 23);
* the command groups, which depend on those and never on each other: `admin`
  (`hsm.admin`), `ped` (`hsm.pedadmin`), `partitions` (`hsm.partitions`), `roles`
  (`hsm.roles`), `objects` (`hsm.objects`), `auditor` (`hsm.auditor`), `clients`
  (`hsm.clients`: the registered clients of the client path and the HSM's certificate
  for port 1792) and `cloning` (`hsm.cloning`: this HSM's end of a clone of objects);
* for each client connection of the client path, `client_access`: a
  `hsm.access.ClientAccess` (PKCS#11 partitions, sessions, logins through the login
  service, objects in `hsm.token`).

The daemon (`hsm.server`) maps the control socket's commands onto these groups with a
table (`hsm.control`); a restart of the process is a power cycle (`power_on`,
`power_off`).

What comes next, and where it goes
----------------------------------
* **Client listener** (PKCS#11 applications through hsmclient, mutual TLS 1.3 on port
  1792): a trio shell started in `hsm.server.Daemon.run`'s nursery beside the control
  socket.  It is a second front end, not a second engine: it admits a certificate that
  `clients.is_registered` names (`clients.refusal` words the others) and serves the
  connection with `client_access`, whose calls need not take the command lock (see
  `hsm.access`: none of them waits for the PED).
* **Backup and restore, HA replication**: on `hsm.cloning` (single objects are cloned
  today, relayed by hsmclient as opaque bytes); a backup partition or an HA member is one
  more caller of `CloneSource` / `CloneTarget`.
* **HA membership**: ``hsm/ha.py``, the group's members and their state in `hsm.store`
  (a new table, written atomically like the rest), fed by the cloning group.
"""

from __future__ import annotations

from pathlib import Path

from hsm.access import ClientAccess
from hsm.activation import Activation
from hsm.admin import AdminCommands
from hsm.auditor import AuditorCommands
from hsm.clients import ClientRegistry
from hsm.clock import Clock
from hsm.cloning import CloningCommands
from hsm.crypto import MasterKey
from hsm.logins import LoginService
from hsm.objects import ObjectCommands
from hsm.partitions import PartitionCommands
from hsm.pedadmin import PedCommands
from hsm.roles import RoleCommands
from hsm.state import HsmState, PedAccess
from hsm.store import Store
from ped.pkcs11.token import PartitionAccess


class Hsm:
    """The emulated HSM: its state, its login service and its command groups."""

    def __init__(
        self,
        home: Path,
        store: Store,
        master: MasterKey,
        clock: Clock,
        ped: PedAccess,
        serial: str | None = None,
    ) -> None:
        self.state = HsmState(home, store, master, clock, ped, serial)
        self.logins = LoginService(self.state)
        self.activation = Activation(self.state)
        self.admin = AdminCommands(self.state, self.logins)
        self.ped = PedCommands(self.state)
        self.partitions = PartitionCommands(self.state)
        self.roles = RoleCommands(self.state, self.logins, self.activation)
        self.objects = ObjectCommands(self.state)
        self.auditor = AuditorCommands(self.state, self.logins)
        self.clients = ClientRegistry(self.state, home)
        self.cloning = CloningCommands(self.state, self.partitions.cloning_domain)

    def client_access(self, client_name: str) -> PartitionAccess:
        """The PKCS#11 view of one registered client's connection (see `hsm.access`)."""
        return ClientAccess(self.state, self.logins, client_name, self.cloning)

    @property
    def serial(self) -> str:
        return self.state.serial

    def power_on(self) -> list[str]:
        """Start-up: finish threshold outcomes a crash interrupted, restore auto-activation."""
        self.state.event("power on", serial=self.state.serial)
        notes = self.logins.finish_interrupted()
        notes.extend(self.activation.restore())
        return notes

    def heartbeat(self) -> None:
        self.activation.heartbeat()

    def power_off(self) -> None:
        self.activation.heartbeat()
        self.state.ram.power_off()
        self.state.event("power off")
