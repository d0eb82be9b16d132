"""Partition commands: create, init, show, policies; roles (so, co, cu); objects."""

from __future__ import annotations

import secrets
import string
from hashlib import sha256
from typing import Any

from hsm import policy as pol
from hsm.core import _LOCK_STATE, MAX_CHALLENGE, MAX_OBJECT, HsmCore, Notify, _check_name
from hsm.crypto import (
    derive_kek,
    random_key,
    unwrap,
    wipe,
    wrap,
)
from hsm.errors import (
    AlreadyExists,
    BadRequest,
    NotInitialised,
    NotLoggedIn,
    PolicyError,
)
from hsm.policy import Role


class PartitionCommands(HsmCore):
    # ------------------------------------------------------------------ partitions

    def partition_create(self, name: str) -> str:
        _check_name("partition name", name)
        self._require_so()
        if self.store.get_partition(name):
            raise AlreadyExists(f"partition {name!r} already exists")
        serial = f"{self.serial}{secrets.randbelow(10**6):06d}"
        with self.store.tx():
            self.store.add_partition(name, serial)
        self._event("partition created", partition=name)
        return f"Partition {name!r} created (serial {serial}); initialise it with `partition init`."

    def partition_delete(self, name: str, force: bool) -> str:
        self._require_so()
        self._partition(name, initialised=False)
        self._confirm(force, f"deleting partition {name!r} destroys all its objects")
        with self.store.tx():
            self.store.delete_partition(name)
        self._drop_partition_ram(name)
        self.store.checkpoint()
        self._event("partition deleted", partition=name)
        return f"Partition {name!r} deleted."

    async def partition_init(self, notify: Notify, name: str, force: bool = False) -> str:
        part = self._partition(name, initialised=False)
        if part.initialised:
            logged = self._partition_login.get(name)
            if self._so_key is None and not (logged and logged[0] is Role.PARTITION_SO):
                raise NotLoggedIn(
                    f"partition {name!r} is initialised: re-initialising it needs its partition "
                    f"SO (`role login --partition {name} --name so`) or the HSM SO logged in"
                )
            self._confirm(force, f"re-initialising partition {name!r} erases its objects and roles")
        async with self._ped(notify) as port:
            blue = await self._imprint(port, Role.PARTITION_SO, f"Partition SO {name}")
            red = await self._imprint(port, Role.DOMAIN, f"Partition domain {name}")
        so_key, dom_key = random_key(), random_key()
        try:
            so_w, _ = self._wrap_role(name, Role.PARTITION_SO, blue, so_key)
            dom_w, _ = self._wrap_role(name, Role.DOMAIN, red, dom_key)
            with self.store.tx():
                self.store.clear_partition(name)
                self.store.put_role(name, Role.PARTITION_SO.value, blue.keyset_id, so_w)
                self.store.put_role(name, Role.DOMAIN.value, red.keyset_id, dom_w)
                self.store.update_partition(name, initialised=True)
        finally:
            blue.wipe()
            red.wipe()
            wipe(so_key)
            wipe(dom_key)
        self._drop_partition_ram(name)
        self.store.checkpoint()
        self._event("partition initialised", partition=name)
        return (
            f"Partition {name!r} initialised. "
            f"Log in with `role login --partition {name} --name so`."
        )

    def _partition_policies(self, part: Any) -> dict[int, int]:
        out = {code: d.default for code, d in pol.PARTITION_POLICIES.items()}
        out.update(part.policies)
        return out

    def partition_show(self, name: str) -> dict[str, Any]:
        part = self._partition(name, initialised=False)
        roles: dict[str, Any] = {}
        for role in (Role.PARTITION_SO, Role.CO, Role.CU):
            row = self.store.get_role(name, role.value)
            if row is None:
                roles[role.value] = {"state": "not initialised"}
                continue
            threshold = self._threshold(name, role)
            locked = row.locked
            if locked == "timed" and self.clock.now() >= row.locked_until:
                locked = ""
            roles[role.value] = {
                "state": _LOCK_STATE[locked],
                "failures": row.failures,
                "attempts_left": max(threshold - row.failures, 0) if not locked else 0,
                "activated": (name, role.value) in self._activation,
            }
        logged = self._partition_login.get(name)
        return {
            "name": part.name,
            "serial": part.serial,
            "initialised": part.initialised,
            "logged_in": logged[0].value if logged else None,
            "objects": self.store.count_objects(name),
            "roles": roles,
            "policies": self._partition_policies(part),
        }

    def partition_showpolicies(self, name: str) -> list[dict[str, Any]]:
        values = self._partition_policies(self._partition(name, initialised=False))
        return [
            {"code": d.code, "description": d.description, "value": values[d.code]}
            for d in pol.PARTITION_POLICIES.values()
        ]

    def partition_changepolicy(self, name: str, code: int, value: int) -> str:
        part = self._partition(name)
        self._partition_role_key(name, Role.PARTITION_SO)
        d = pol.PARTITION_POLICIES.get(code)
        if d is None:
            known = ", ".join(str(c) for c in pol.PARTITION_POLICIES)
            raise PolicyError(f"partition policy {code} is not one this HSM has (known: {known})")
        d.check(value)
        policies = dict(part.policies)
        old = self._partition_policies(part)[code]
        policies[code] = value
        with self.store.tx():
            self.store.update_partition(name, policies=policies)
            if code == pol.POLICY_AUTO_ACTIVATION and value == 0:
                self.store.delete_activation(name)
        if code == pol.POLICY_ACTIVATION and value == 0:
            with self.store.tx():
                self.store.delete_activation(name)
            for key in [k for k in self._activation if k[0] == name]:
                wipe(self._activation.pop(key))
        self._event("policy changed", partition=name, policy=code, old=old, new=value)
        return f"Partition {name!r} policy {code} ({d.description}) set to {value}."

    # ------------------------------------------------------------------ roles

    def _new_challenge(self, challenge: bytes | None) -> tuple[bytes, bool]:
        if challenge is not None:
            if not 1 <= len(challenge) <= MAX_CHALLENGE:
                raise BadRequest(f"a challenge secret has 1-{MAX_CHALLENGE} bytes")
            return challenge, False
        alphabet = string.ascii_letters + string.digits
        return "".join(secrets.choice(alphabet) for _ in range(16)).encode(), True

    async def role_init(
        self, notify: Notify, name: str, role_name: str, challenge: bytes | None
    ) -> str:
        role = self._parse_role(role_name, (Role.CO, Role.CU))
        self._partition(name)
        if self.store.get_role(name, role.value) is not None:
            raise AlreadyExists(
                f"the {role.title} of partition {name!r} is already initialised"
                + (
                    f"; reset it with `role resetpw --partition {name} --name co`"
                    if role is Role.CO
                    else ""
                )
            )
        if role is Role.CO:
            _, so_key = self._partition_role_key(name, Role.PARTITION_SO)
            data_key = random_key()
        else:
            _, co_key = self._partition_role_key(name, Role.CO)
            data_key = bytearray(co_key)
            so_key = None
        chal, generated = self._new_challenge(challenge)
        try:
            async with self._ped(notify) as port:
                got = await self._imprint(port, role, f"{role.title} {name}")
                if generated:
                    await port.show(f"{role.title} challenge secret: {chal.decode()}")
            try:
                wrapped, wrapped_chal = self._wrap_role(name, role, got, data_key, chal)
            finally:
                got.wipe()
            escrow = ...
            if role is Role.CO and self._so_can_reset() and so_key is not None:
                # Policy 15 on: the partition SO can later re-wrap the data key for a new CO.
                ekek = derive_kek(so_key, self._aad(name, "so", "escrow"))
                escrow = wrap(ekek, data_key, self._aad(name, "co", "escrow"))
                wipe(ekek)
            with self.store.tx():
                self.store.put_role(name, role.value, got.keyset_id, wrapped, wrapped_chal)
                if escrow is not ...:
                    self.store.update_partition(name, escrow=escrow)
        finally:
            wipe(data_key)
        self._event("role initialised", partition=name, role=role.value)
        shown = " The challenge secret is shown on the PED screen." if generated else ""
        return f"{role.title} of partition {name!r} initialised.{shown}"

    @staticmethod
    def _parse_role(text: str, allowed: tuple[Role, ...]) -> Role:
        for role in allowed:
            if text.lower() == role.value:
                return role
        names = "|".join(r.value for r in allowed)
        raise BadRequest(f"role {text!r} is not valid here; use --name {names}")

    async def role_login(
        self, notify: Notify, name: str, role_name: str, challenge: bytes | None
    ) -> str:
        role = self._parse_role(role_name, (Role.PARTITION_SO, Role.CO, Role.CU))
        part = self._partition(name)
        if challenge is not None and role is Role.PARTITION_SO:
            raise BadRequest("the partition SO has no challenge secret; omit --challenge-file")
        # Policy 22: the PED secret is cached the first time the role uses the PED.
        activation = (
            self._partition_policies(part)[pol.POLICY_ACTIVATION] == 1
            and (name, role.value) not in self._activation
        )
        key, secret = await self._login(
            name,
            role,
            notify,
            challenge=challenge,
            keep_secret=activation and role is not Role.PARTITION_SO,
        )
        via = ""
        if secret is not None:
            self._activate(name, role, part, secret)
            via = " (role activated)"
        old = self._partition_login.pop(name, None)
        if old:
            wipe(old[1])
        self._partition_login[name] = (role, key)
        return f"{role.title} of partition {name!r} logged in{via}."

    def _activate(self, name: str, role: Role, part: Any, secret: bytearray) -> None:
        key = (name, role.value)
        if key in self._activation:
            wipe(self._activation[key])
        self._activation[key] = secret
        if self._partition_policies(part)[pol.POLICY_AUTO_ACTIVATION] == 1:
            sealed = self.master.seal(self._aad(name, role.value, "activation"), secret)
            with self.store.tx():
                self.store.put_activation(name, role.value, sealed, self.clock.now())
        self._event("role activated", partition=name, role=role.value)

    def role_logout(self, name: str | None) -> str:
        names = [name] if name else list(self._partition_login)
        out = []
        for n in names:
            logged = self._partition_login.pop(n, None)
            if logged:
                wipe(logged[1])
                self._event("logout", partition=n, role=logged[0].value)
                out.append(f"{logged[0].title} of partition {n!r} logged out.")
        return "\n".join(out) or "No partition role was logged in."

    async def role_activate(self, notify: Notify, name: str, role_name: str) -> str:
        role = self._parse_role(role_name, (Role.CO, Role.CU))
        part = self._partition(name)
        if self._partition_policies(part)[pol.POLICY_ACTIVATION] != 1:
            raise PolicyError(
                f"activation is not allowed on partition {name!r}: the partition SO must set "
                f"policy 22 (`partition changepolicy --name {name} --policy 22 --value 1`)"
            )
        key, secret = await self._login(name, role, notify, keep_secret=True)
        wipe(key)
        assert secret is not None
        self._activate(name, role, part, secret)
        return f"{role.title} of partition {name!r} activated."

    def role_deactivate(self, name: str, role_name: str) -> str:
        role = self._parse_role(role_name, (Role.CO, Role.CU))
        self._partition(name, initialised=False)
        buf = self._activation.pop((name, role.value), None)
        wipe(buf)
        with self.store.tx():
            self.store.delete_activation(name, role.value)
        self._event("role deactivated", partition=name, role=role.value)
        return f"{role.title} of partition {name!r} deactivated."

    async def role_resetpw(
        self, notify: Notify, name: str, role_name: str, challenge: bytes | None
    ) -> str:
        self._parse_role(role_name, (Role.CO,))
        part = self._partition(name)
        _, so_key = self._partition_role_key(name, Role.PARTITION_SO)
        if self.store.get_role(name, Role.CO.value) is None:
            raise NotInitialised(f"partition {name!r} has no Crypto Officer to reset")
        if part.escrow is None:
            raise PolicyError(
                "the partition SO cannot reset the Crypto Officer: HSM policy 15 (SO can reset "
                "partition PIN) was off when the CO was created; re-initialise the partition"
            )
        ekek = derive_kek(so_key, self._aad(name, "so", "escrow"))
        try:
            data_key = unwrap(ekek, part.escrow, self._aad(name, "co", "escrow"))
        finally:
            wipe(ekek)
        chal, generated = self._new_challenge(challenge)
        try:
            async with self._ped(notify) as port:
                got = await self._imprint(port, Role.CO, f"Crypto Officer {name}")
                if generated:
                    await port.show(f"Crypto Officer challenge secret: {chal.decode()}")
            try:
                wrapped, wrapped_chal = self._wrap_role(name, Role.CO, got, data_key, chal)
            finally:
                got.wipe()
            with self.store.tx():
                self.store.put_role(name, Role.CO.value, got.keyset_id, wrapped, wrapped_chal)
                if self.store.get_role(name, Role.CU.value) is not None:
                    self.store.update_role(name, Role.CU.value, locked="", failures=0)
                self.store.delete_activation(name, Role.CO.value)
        finally:
            wipe(data_key)
        self._activation.pop((name, Role.CO.value), None)
        self._event("role reset", partition=name, role="co")
        return (
            f"Crypto Officer of partition {name!r} reset: new black key imprinted, CO and CU "
            "unlocked."
        )

    # ------------------------------------------------------------------ objects

    def object_create(self, name: str, label: str, value: bytes | None) -> str:
        _check_name("object label", label)
        self._partition(name)
        _, data_key = self._partition_role_key(name, Role.CO, Role.CU)
        if value is None:
            value = secrets.token_bytes(32)
        if len(value) > MAX_OBJECT:
            raise BadRequest(f"an object holds at most {MAX_OBJECT} bytes")
        if any(lbl == label for lbl, _ in self.store.objects(name)):
            raise AlreadyExists(f"partition {name!r} already has an object labelled {label!r}")
        blob = wrap(data_key, value, self._aad(name, label, "object"))
        with self.store.tx():
            self.store.put_object(name, label, blob)
        self._event("object created", partition=name, label=label)
        return f"Object {label!r} created in partition {name!r} ({len(value)} bytes)."

    def object_list(self, name: str) -> list[dict[str, Any]]:
        self._partition(name)
        _, data_key = self._partition_role_key(name, Role.CO, Role.CU)
        out = []
        for label, blob in self.store.objects(name):
            value = unwrap(data_key, blob, self._aad(name, label, "object"))
            out.append({"label": label, "size": len(value), "sha256": sha256(value).hexdigest()})
            wipe(value)
        return out
