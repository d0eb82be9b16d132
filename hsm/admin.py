"""The HSM SO's commands: init, login, logout, changepw, show, zeroize, policies, tamper."""

from __future__ import annotations

from typing import Any

from hsm import policy as pol
from hsm.changepw import Change, change_secret
from hsm.crypto import random_key, wipe
from hsm.enrol import imprint, wrap_role
from hsm.errors import PolicyError
from hsm.logins import LoginService
from hsm.policy import Role
from hsm.state import HsmState, Notify, check_name, confirm
from hsm.store import HSM_SCOPE

FIRMWARE = "7.8.4-emulated"
MODEL = "pedhsm emulated PED-authenticated HSM"


class AdminCommands:
    """``hsm ...`` commands (the RPV and the PED link are `hsm.pedadmin`'s)."""

    def __init__(self, state: HsmState, logins: LoginService) -> None:
        self._state = state
        self._logins = logins

    async def init(self, notify: Notify, label: str, force: bool = False) -> str:
        st = self._state
        check_name("label", label)
        if st.initialised:
            st.require_so()
            confirm(force, "re-initialising the HSM erases all partitions and objects")
        async with st.ped_session(notify) as port:
            blue = await imprint(port, Role.HSM_SO, "HSM SO")
            red = await imprint(port, Role.DOMAIN, "HSM cloning domain")
        so_key, dom_key = random_key(), random_key()
        try:
            so_w, _ = wrap_role(st, HSM_SCOPE, Role.HSM_SO, blue, so_key)
            dom_w, _ = wrap_role(st, HSM_SCOPE, Role.DOMAIN, red, dom_key)
            if st.initialised:
                st.zeroize("re-initialisation")
            with st.store.tx():
                st.store.put_role(HSM_SCOPE, Role.HSM_SO.value, blue.keyset_id, so_w)
                st.store.put_role(HSM_SCOPE, Role.DOMAIN.value, red.keyset_id, dom_w)
                st.store.set_meta("label", label)
                st.store.set_meta("initialised", "1")
        finally:
            blue.wipe()
            red.wipe()
            wipe(so_key)
            wipe(dom_key)
        st.event("hsm initialised", label=label)
        return f"HSM {st.serial} initialised with label {label!r}. Log in with `hsm login`."

    async def login(self, notify: Notify) -> str:
        st = self._state
        st.require_initialised()
        key, _ = await self._logins.login(HSM_SCOPE, Role.HSM_SO, notify)
        wipe(st.ram.so_key)
        st.ram.so_key = key
        return "HSM SO logged in."

    async def changepw(self, notify: Notify) -> str:
        """A new blue key (secret) for the HSM SO, who is logged in: see `hsm.changepw`."""
        st = self._state
        st.require_so()
        change = Change(secret=True, challenge=False)
        return await change_secret(st, self._logins, notify, HSM_SCOPE, Role.HSM_SO, change,
                                   by=Role.HSM_SO)  # fmt: skip

    def logout(self) -> str:
        st = self._state
        was = st.ram.so_key is not None
        wipe(st.ram.so_key)
        st.ram.so_key = None
        if was:
            st.event("logout", role=Role.HSM_SO.value)
        return "HSM SO logged out." if was else "The HSM SO was not logged in."

    def show(self) -> dict[str, Any]:
        st = self._state
        so = st.store.get_role(HSM_SCOPE, Role.HSM_SO.value)
        return {
            "label": st.store.get_meta("label") or "",
            "serial": st.serial,
            "model": MODEL,
            "firmware": FIRMWARE,
            "state": "initialised" if st.initialised else "zeroized",
            "so_logged_in": st.so_logged_in,
            "so_failures": so.failures if so else 0,
            "so_attempts_left": pol.HSM_SO_THRESHOLD - (so.failures if so else 0),
            "auditor": "initialised"
            if st.store.get_role(HSM_SCOPE, Role.AUDITOR.value)
            else "not initialised",
            "rpv": "set" if st.store.get_meta("rpv_sealed") else "not set",
            "partitions": [p.name for p in st.store.partitions()],
        }

    def zeroize(self, force: bool) -> str:
        confirm(force, "zeroizing erases all partitions, objects and roles of the HSM")
        self._state.zeroize("hsm zeroize command")
        return "HSM zeroized: all partitions, objects and roles are gone."

    def showpolicies(self) -> list[dict[str, Any]]:
        values = self._state.hsm_policies()
        return [
            {
                "code": d.code,
                "description": d.description,
                "value": values[d.code],
                "destructive": d.destructive,
            }
            for d in pol.HSM_POLICIES.values()
        ]

    def changepolicy(self, code: int, value: int, force: bool) -> str:
        st = self._state
        st.require_so()
        d = pol.HSM_POLICIES.get(code)
        if d is None:
            known = ", ".join(str(c) for c in pol.HSM_POLICIES)
            raise PolicyError(f"HSM policy {code} is not one this HSM has (known: {known})")
        d.check(value)
        old = st.hsm_policies()[code]
        if old == value:
            return f"HSM policy {code} ({d.description}) is already {value}; nothing changed."
        if d.destructive:
            confirm(force, f"changing policy {code} ({d.description}) ZEROIZES the HSM")
        with st.store.tx():
            st.store.set_meta(f"policy.{code}", str(value))
        st.event("policy changed", scope="hsm", policy=code, old=old, new=value)
        if d.destructive:
            st.zeroize(f"destructive policy {code} changed")
            return (
                f"HSM policy {code} ({d.description}) set to {value}. The policy is destructive: "
                "the HSM has been zeroized; re-initialise it with `hsm init`."
            )
        return f"HSM policy {code} ({d.description}) set to {value}."

    def tamper(self) -> str:
        st = self._state
        with st.store.tx():
            st.store.delete_activation()
        st.ram.drop_activation()
        st.event("tamper")
        return "Tamper event recorded: all activated roles are deactivated (cache cleared)."
