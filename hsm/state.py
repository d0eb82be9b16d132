"""The HSM's state: its durable handles, the RAM of the powered HSM, and the shared checks.

Theory of operation
-------------------
`HsmState` is what every part of the HSM works on.  It holds the durable state
(`hsm.store`, committed before any result is reported), the device key
(`hsm.crypto.MasterKey`), the audit log, the wall clock and, in `Ram`, what a powered HSM
keeps only in memory: which roles are logged in (with the keys they opened) and the
activation cache.  A restart of the process is a power cycle: `Ram` is gone.

The checks commands share (is the HSM initialised, who is logged in, does the partition
exist) and the HSM-wide zeroization live here, so that the command modules and the login
service (`hsm.logins`) depend on this one object and never on each other.

Commands are serialised by the daemon (one at a time, like the HSM's command processor),
so nothing here needs locking of its own.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import attrs

from hsm import policy as pol
from hsm.audit import AuditLog
from hsm.clock import Clock
from hsm.crypto import MasterKey, wipe
from hsm.errors import (
    ConfirmationRequired,
    InvalidCommand,
    NotFound,
    NotInitialised,
    NotLoggedIn,
)
from hsm.pedport import PedPort
from hsm.policy import Role
from hsm.store import HSM_SCOPE, PartitionRow, RoleRow, Store

ATTEND = "Please attend to the PED."
MAX_LABEL = 64

#: Where a command's progress texts go (the shell prints them while the command runs).
Notify = Callable[[str], None]


class PedAccess(Protocol):
    """What the HSM needs from the daemon's PED router (`hsm.pedlink.PedRouter`)."""

    def session(
        self, *, local_only: bool = False, notify: Notify | None = None
    ) -> contextlib.AbstractAsyncContextManager[PedPort]: ...

    async def connect(
        self, host: str, port: int, rpv: bytearray, notify: Notify, *, peer: str | None = None
    ) -> str: ...

    async def disconnect(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def which(self, *, local_only: bool = False) -> str:
        """The PED a session would use: ``remote PED A:P (SERIAL)`` or ``local PED``."""
        ...


def check_name(kind: str, name: str) -> str:
    """A label, partition name or object label: short, printable, never starting with '#'."""
    ok = string.ascii_letters + string.digits + "-_."
    if not name or len(name) > MAX_LABEL or name[0] == "#" or any(c not in ok for c in name):
        raise InvalidCommand(
            f"{kind} {name!r} is not valid: use 1-{MAX_LABEL} letters, digits, '-', '_' or '.'"
        )
    return name


def confirm(force: bool, what: str) -> None:
    """A destructive command goes ahead only when confirmed."""
    if not force:
        raise ConfirmationRequired(
            f"{what}; confirm with --force (or type 'proceed' when the shell asks)"
        )


@attrs.define(repr=False)
class Ram:
    """What the powered HSM holds in memory only; every key in it is wiped when dropped."""

    so_key: bytearray | None = None
    auditor: bool = False
    #: partition name -> (the role logged in to it, the key that role opened)
    partition_login: dict[str, tuple[Role, bytearray]] = attrs.Factory(dict)
    #: (partition, role) -> the role's PED secret, cached by activation (policy 22)
    activation: dict[tuple[str, str], bytearray] = attrs.Factory(dict)

    def __repr__(self) -> str:
        return "Ram(<hidden>)"

    def logout_all(self) -> None:
        wipe(self.so_key)
        self.so_key = None
        self.auditor = False
        for _, key in self.partition_login.values():
            wipe(key)
        self.partition_login.clear()

    def drop_activation(self, partition: str | None = None, role: str | None = None) -> None:
        """Forget cached PED secrets: all, a partition's, or one role's."""
        for key in list(self.activation):
            if partition is None or (key[0] == partition and role in (None, key[1])):
                wipe(self.activation.pop(key))

    def drop_partition(self, name: str, *, keep_so: bool = False) -> None:
        """Forget a partition's login (unless it is its SO and *keep_so*) and activations."""
        logged = self.partition_login.get(name)
        if logged and not (keep_so and logged[0] is Role.PARTITION_SO):
            wipe(self.partition_login.pop(name)[1])
        self.drop_activation(name)

    def power_off(self) -> None:
        self.logout_all()
        self.drop_activation()


class HsmState:
    """The durable state, the RAM and the checks every command and the login service share."""

    def __init__(
        self,
        home: Path,
        store: Store,
        master: MasterKey,
        clock: Clock,
        ped: PedAccess,
        serial: str | None = None,
    ) -> None:
        self.store = store
        self.master = master
        self.clock = clock
        self.ped = ped
        self.audit = AuditLog(home, master, store)
        stored = store.get_meta("serial")
        if stored is None:
            stored = serial or str(secrets.randbelow(900_000) + 100_000)
            with store.tx():
                store.set_meta("serial", stored)
        self.serial = stored
        self.ram = Ram()

    # ------------------------------------------------------------------ records

    def event(self, event: str, **details: Any) -> None:
        """Append to the audit log (flushed and fsynced before the command reports)."""
        self.audit.append(event, wall_time=self.clock.now(), **details)

    def aad(self, scope: str, role: str, kind: str) -> str:
        """Associated data binding a wrapped key to this HSM, its scope, role and use."""
        return f"pedhsm/v1|{self.serial}|{scope}|{role}|{kind}"

    @contextlib.asynccontextmanager
    async def ped_session(
        self, notify: Notify, *, local_only: bool = False
    ) -> AsyncIterator[PedPort]:
        """The PED for one operation, after telling the shell to attend to it (and which)."""
        notify(f"{ATTEND} It is the {self.ped.which(local_only=local_only)}.")
        async with self.ped.session(local_only=local_only, notify=notify) as port:
            yield port

    # ------------------------------------------------------------------ checks

    @property
    def initialised(self) -> bool:
        return self.store.get_meta("initialised") == "1"

    @property
    def so_logged_in(self) -> bool:
        return self.ram.so_key is not None

    def require_initialised(self) -> None:
        if not self.initialised:
            raise NotInitialised("the HSM is zeroized; initialise it first with `hsm init`")

    def require_so(self) -> bytearray:
        self.require_initialised()
        if self.ram.so_key is None:
            raise NotLoggedIn("the HSM SO must be logged in: run `hsm login` first")
        return self.ram.so_key

    def partition(self, name: str, *, initialised: bool = True) -> PartitionRow:
        part = self.store.get_partition(name)
        if part is None:
            raise NotFound(f"no partition named {name!r}; `hsm show` lists them")
        if initialised and not part.initialised:
            raise NotInitialised(
                f"partition {name!r} is not initialised; run `partition init --name {name}`"
            )
        return part

    def partition_role_key(self, name: str, *roles: Role) -> tuple[Role, bytearray]:
        """The role logged in to partition *name* and its key, if it is one of *roles*."""
        logged = self.ram.partition_login.get(name)
        if logged is None or logged[0] not in roles:
            who = " or ".join(r.title for r in roles)
            flag = "so" if roles == (Role.PARTITION_SO,) else roles[0].value
            raise NotLoggedIn(
                f"this needs the {who} of partition {name!r} logged in: "
                f"run `role login --partition {name} --name {flag}`"
            )
        return logged

    def role_row(self, scope: str, role: Role) -> RoleRow:
        row = self.store.get_role(scope, role.value)
        if row is None:
            where = "the HSM" if scope == HSM_SCOPE else f"partition {scope!r}"
            hint = {
                Role.HSM_SO: "run `hsm init`",
                Role.AUDITOR: "run `audit init`",
                Role.PARTITION_SO: f"run `partition init --name {scope}`",
                Role.CO: f"run `role init --partition {scope} --name co`",
                Role.CU: f"run `role init --partition {scope} --name cu`",
            }.get(role, "initialise it first")
            raise NotInitialised(f"the {role.title} of {where} is not initialised; {hint}")
        return row

    # ------------------------------------------------------------------ policies

    def threshold(self, scope: str, role: Role) -> int:
        policies = None
        if scope != HSM_SCOPE:
            part = self.store.get_partition(scope)
            policies = part.policies if part else None
        return pol.threshold_of(role, policies)

    def hsm_policies(self) -> dict[int, int]:
        out = {code: d.default for code, d in pol.HSM_POLICIES.items()}
        for code in pol.HSM_POLICIES:
            value = self.store.get_meta(f"policy.{code}")
            if value is not None:
                out[code] = int(value)
        return out

    def so_can_reset(self) -> bool:
        return self.hsm_policies().get(pol.POLICY_SO_RESET, 0) == 1

    @staticmethod
    def partition_policies(part: PartitionRow) -> dict[int, int]:
        out = {code: d.default for code, d in pol.PARTITION_POLICIES.items()}
        out.update(part.policies)
        return out

    # ------------------------------------------------------------------ zeroization

    def zeroize(self, reason: str) -> None:
        """Erase partitions, objects and roles (the auditor stays) and everything in RAM."""
        with self.store.tx():
            self.store.zeroize()
            self.store.set_meta("initialised", "0")
            self.store.set_meta("label", None)
        self.store.checkpoint()
        self.ram.power_off()
        self.event("hsm zeroized", reason=reason)
