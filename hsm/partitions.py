"""Partition commands: create, delete, init, show, policies.

A partition's cloning domain is the secret of its red key set: imprinted new at `init`,
or read from an existing red key set (``--domain-from-red-key``) so that this partition
joins the domain of the partitions initialised from that set, on this HSM or another.
The HSM keeps the domain sealed under its device key (`cloning_domain` unseals it), so
that cloning (``ped.cloning``) does not need the red key each time, as on the reference
product; the DOMAIN role row records the red keyset's id.
"""

from __future__ import annotations

import secrets
from typing import Any

from hsm import policy as pol
from hsm.crypto import UnwrapFailed, random_key, wipe
from hsm.enrol import imprint, wrap_role
from hsm.errors import AlreadyExists, InvalidCommand, NotInitialised, NotLoggedIn, PolicyError
from hsm.pedport import PedSecret
from hsm.policy import Role
from hsm.state import HsmState, Notify, check_name, confirm
from ped.cloning import domain_fingerprint, format_fingerprint

#: How `partition show` names a role's lock state (`hsm.store.RoleRow.locked`).
LOCK_STATE = {
    "": "ok",
    "timed": "locked (unlocks by itself)",
    "reset": "locked (partition SO reset needed)",
    "permanent": "locked (permanent)",
}


class PartitionCommands:
    """``partition ...`` commands (roles are `hsm.roles`', objects `hsm.objects`')."""

    def __init__(self, state: HsmState) -> None:
        self._state = state

    def create(self, name: str) -> str:
        st = self._state
        check_name("partition name", name)
        st.require_so()
        if st.store.get_meta("backup_hsm") == "1":  # hsm.backup.BACKUP_META
            raise InvalidCommand("this is a Backup HSM: it holds backup partitions, made by "
                                 "`hsmclient partition archive backup`, not partitions")
        if st.store.get_partition(name):
            raise AlreadyExists(f"partition {name!r} already exists")
        serial = f"{st.serial}{secrets.randbelow(10**6):06d}"
        with st.store.tx():
            st.store.add_partition(name, serial)
        st.event("partition created", partition=name)
        return f"Partition {name!r} created (serial {serial}); initialise it with `partition init`."

    def delete(self, name: str, force: bool) -> str:
        st = self._state
        st.require_so()
        st.partition(name, initialised=False)
        confirm(force, f"deleting partition {name!r} destroys all its objects")
        with st.store.tx():
            st.store.delete_partition(name)
        st.ram.drop_partition(name)
        st.store.checkpoint()
        st.event("partition deleted", partition=name)
        return f"Partition {name!r} deleted."

    async def init(
        self, notify: Notify, name: str, force: bool = False, domain_from_red_key: bool = False
    ) -> str:
        """Imprint the partition SO's blue key and a red key (a new cloning domain), or,
        with *domain_from_red_key*, read an existing red key set (M of N, PIN, as any
        login read: a key of another colour is refused and not counted) and join its
        domain."""
        st = self._state
        part = st.partition(name, initialised=False)
        if part.initialised:
            logged = st.ram.partition_login.get(name)
            if st.ram.so_key is None and not (logged and logged[0] is Role.PARTITION_SO):
                raise NotLoggedIn(
                    f"partition {name!r} is initialised: re-initialising it needs its partition "
                    f"SO (`role login --partition {name} --name so`) or the HSM SO logged in"
                )
            confirm(force, f"re-initialising partition {name!r} erases its objects and roles")
        async with st.ped_session(notify) as port:
            blue = await imprint(port, Role.PARTITION_SO, f"Partition SO {name}")
            red: PedSecret | None = None
            try:
                if domain_from_red_key:
                    red = await port.read_secret(
                        Role.DOMAIN.color, None, f"existing cloning domain for {name}"
                    )
                else:
                    red = await imprint(port, Role.DOMAIN, f"Partition domain {name}")
            finally:
                if red is None:
                    blue.wipe()
        so_key = random_key()
        try:
            so_w, _ = wrap_role(st, name, Role.PARTITION_SO, blue, so_key)
            dom_w = st.master.seal(st.aad(name, Role.DOMAIN.value, "device"), red.secret)
            fingerprint = format_fingerprint(domain_fingerprint(red.secret))
            with st.store.tx():
                st.store.clear_partition(name)
                st.store.put_role(name, Role.PARTITION_SO.value, blue.keyset_id, so_w)
                st.store.put_role(name, Role.DOMAIN.value, red.keyset_id, dom_w)
                st.store.update_partition(name, initialised=True)
        finally:
            blue.wipe()
            red.wipe()
            wipe(so_key)
        st.ram.drop_partition(name)
        st.store.checkpoint()
        if domain_from_red_key:
            st.event("partition initialised", partition=name, domain=fingerprint)
            return (
                f"Partition {name!r} initialised in the cloning domain of the red key set "
                f"presented (domain fingerprint {fingerprint}: compare it with the other "
                f"partitions'). Log in with `role login --partition {name} --name so`."
            )
        st.event("partition initialised", partition=name)
        return (
            f"Partition {name!r} initialised. "
            f"Log in with `role login --partition {name} --name so`."
        )

    def cloning_domain(self, name: str) -> bytearray:
        """The partition's cloning domain (the red key's secret), unsealed: wipe it after use."""
        st = self._state
        st.partition(name)
        row = st.store.get_role(name, Role.DOMAIN.value)
        if row is None:
            raise NotInitialised(f"partition {name!r} has no cloning domain; initialise it")
        try:
            return st.master.unseal(st.aad(name, Role.DOMAIN.value, "device"), row.wrapped)
        except UnwrapFailed:
            # Initialised before domains were sealed under the device key (the domain was a
            # random key wrapped under the red key's secret): it cannot be shared or cloned.
            raise NotInitialised(
                f"partition {name!r} was initialised before cloning domains could be shared: "
                f"its domain cannot take part in a clone; re-initialise it (`partition init "
                f"--name {name} --force`, joining a domain with --domain-from-red-key) and "
                f"move its keys by cloning from a partition of that domain"
            ) from None

    def show(self, name: str) -> dict[str, Any]:
        st = self._state
        part = st.partition(name, initialised=False)
        roles: dict[str, Any] = {}
        for role in (Role.PARTITION_SO, Role.CO, Role.CU):
            row = st.store.get_role(name, role.value)
            if row is None:
                roles[role.value] = {"state": "not initialised"}
                continue
            threshold = st.threshold(name, role)
            locked = row.locked
            if locked == "timed" and st.clock.now() >= row.locked_until:
                locked = ""
            roles[role.value] = {
                "state": LOCK_STATE[locked],
                "failures": row.failures,
                "attempts_left": max(threshold - row.failures, 0) if not locked else 0,
                "activated": (name, role.value) in st.ram.activation,
            }
        logged = st.ram.partition_login.get(name)
        return {
            "name": part.name,
            "serial": part.serial,
            "initialised": part.initialised,
            "logged_in": logged[0].value if logged else None,
            "objects": st.store.count_objects(name),
            "roles": roles,
            "policies": st.partition_policies(part),
        }

    def showpolicies(self, name: str) -> list[dict[str, Any]]:
        st = self._state
        values = st.partition_policies(st.partition(name, initialised=False))
        return [
            {"code": d.code, "description": d.description, "value": values[d.code]}
            for d in pol.PARTITION_POLICIES.values()
        ]

    def changepolicy(self, name: str, code: int, value: int) -> str:
        st = self._state
        part = st.partition(name)
        st.partition_role_key(name, Role.PARTITION_SO)
        d = pol.PARTITION_POLICIES.get(code)
        if d is None:
            known = ", ".join(str(c) for c in pol.PARTITION_POLICIES)
            raise PolicyError(f"partition policy {code} is not one this HSM has (known: {known})")
        d.check(value)
        policies = dict(part.policies)
        old = st.partition_policies(part)[code]
        policies[code] = value
        with st.store.tx():
            st.store.update_partition(name, policies=policies)
            if code == pol.POLICY_AUTO_ACTIVATION and value == 0:
                st.store.delete_activation(name)
        if code == pol.POLICY_ACTIVATION and value == 0:
            with st.store.tx():
                st.store.delete_activation(name)
            st.ram.drop_activation(name)
        st.event("policy changed", partition=name, policy=code, old=old, new=value)
        return f"Partition {name!r} policy {code} ({d.description}) set to {value}."
