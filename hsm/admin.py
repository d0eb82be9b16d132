"""HSM-wide commands: init, login, show, zeroize, policies, tamper, RPV and PED link, audit."""

from __future__ import annotations

from typing import Any

from hsm import policy as pol
from hsm.core import FIRMWARE, MODEL, HsmCore, Notify, _check_name
from hsm.crypto import (
    random_key,
    wipe,
)
from hsm.errors import (
    BadRequest,
    NotInitialised,
    NotLoggedIn,
    PedUnavailable,
    PolicyError,
)
from hsm.policy import Role
from hsm.store import HSM_SCOPE
from keys.colors import Color


class AdminCommands(HsmCore):
    # ------------------------------------------------------------------ hsm commands

    async def hsm_init(self, notify: Notify, label: str, force: bool = False) -> str:
        _check_name("label", label)
        if self.initialised:
            self._require_so()
            self._confirm(force, "re-initialising the HSM erases all partitions and objects")
        async with self._ped(notify) as port:
            blue = await self._imprint(port, Role.HSM_SO, "HSM SO")
            red = await self._imprint(port, Role.DOMAIN, "HSM cloning domain")
        so_key, dom_key = random_key(), random_key()
        try:
            so_w, _ = self._wrap_role(HSM_SCOPE, Role.HSM_SO, blue, so_key)
            dom_w, _ = self._wrap_role(HSM_SCOPE, Role.DOMAIN, red, dom_key)
            if self.initialised:
                self._zeroize("re-initialisation")
            with self.store.tx():
                self.store.put_role(HSM_SCOPE, Role.HSM_SO.value, blue.keyset_id, so_w)
                self.store.put_role(HSM_SCOPE, Role.DOMAIN.value, red.keyset_id, dom_w)
                self.store.set_meta("label", label)
                self.store.set_meta("initialised", "1")
        finally:
            blue.wipe()
            red.wipe()
            wipe(so_key)
            wipe(dom_key)
        self._event("hsm initialised", label=label)
        return f"HSM {self.serial} initialised with label {label!r}. Log in with `hsm login`."

    async def hsm_login(self, notify: Notify) -> str:
        self._require_initialised()
        key, _ = await self._login(HSM_SCOPE, Role.HSM_SO, notify)
        wipe(self._so_key)
        self._so_key = key
        return "HSM SO logged in."

    def hsm_logout(self) -> str:
        was = self._so_key is not None
        wipe(self._so_key)
        self._so_key = None
        if was:
            self._event("logout", role=Role.HSM_SO.value)
        return "HSM SO logged out." if was else "The HSM SO was not logged in."

    def hsm_show(self) -> dict[str, Any]:
        so = self.store.get_role(HSM_SCOPE, Role.HSM_SO.value)
        return {
            "label": self.store.get_meta("label") or "",
            "serial": self.serial,
            "model": MODEL,
            "firmware": FIRMWARE,
            "state": "initialised" if self.initialised else "zeroized",
            "so_logged_in": self._so_key is not None,
            "so_failures": so.failures if so else 0,
            "so_attempts_left": pol.HSM_SO_THRESHOLD - (so.failures if so else 0),
            "auditor": "initialised"
            if self.store.get_role(HSM_SCOPE, Role.AUDITOR.value)
            else "not initialised",
            "rpv": "set" if self.store.get_meta("rpv_sealed") else "not set",
            "partitions": [p.name for p in self.store.partitions()],
        }

    def hsm_zeroize(self, force: bool) -> str:
        self._confirm(force, "zeroizing erases all partitions, objects and roles of the HSM")
        self._zeroize("hsm zeroize command")
        return "HSM zeroized: all partitions, objects and roles are gone."

    def hsm_showpolicies(self) -> list[dict[str, Any]]:
        values = self._hsm_policies()
        return [
            {
                "code": d.code,
                "description": d.description,
                "value": values[d.code],
                "destructive": d.destructive,
            }
            for d in pol.HSM_POLICIES.values()
        ]

    def hsm_changepolicy(self, code: int, value: int, force: bool) -> str:
        self._require_so()
        d = pol.HSM_POLICIES.get(code)
        if d is None:
            known = ", ".join(str(c) for c in pol.HSM_POLICIES)
            raise PolicyError(f"HSM policy {code} is not one this HSM has (known: {known})")
        d.check(value)
        old = self._hsm_policies()[code]
        if old == value:
            return f"HSM policy {code} ({d.description}) is already {value}; nothing changed."
        if d.destructive:
            self._confirm(force, f"changing policy {code} ({d.description}) ZEROIZES the HSM")
        with self.store.tx():
            self.store.set_meta(f"policy.{code}", str(value))
        self._event("policy changed", scope="hsm", policy=code, old=old, new=value)
        if d.destructive:
            self._zeroize(f"destructive policy {code} changed")
            return (
                f"HSM policy {code} ({d.description}) set to {value}. The policy is destructive: "
                "the HSM has been zeroized; re-initialise it with `hsm init`."
            )
        return f"HSM policy {code} ({d.description}) set to {value}."

    def hsm_tamper(self) -> str:
        with self.store.tx():
            self.store.delete_activation()
        for buf in self._activation.values():
            wipe(buf)
        self._activation.clear()
        self._event("tamper")
        return "Tamper event recorded: all activated roles are deactivated (cache cleared)."

    # ------------------------------------------------------------------ RPV and PED link

    def _rpv(self) -> bytearray:
        sealed = self.store.get_meta("rpv_sealed")
        if sealed is None:
            raise NotInitialised(
                "the HSM has no Remote PED Vector; run `hsm ped vector init` with a local PED"
            )
        return self.master.unseal("rpv", bytes.fromhex(sealed))

    def _require_so_if_initialised(self, what: str) -> None:
        if self.initialised and self._so_key is None:
            raise NotLoggedIn(f"{what} on an initialised HSM needs the HSM SO: run `hsm login`")

    async def ped_vector_init(self, notify: Notify) -> str:
        self._require_so_if_initialised("initialising the RPV")
        fresh = random_key()
        async with self._ped(notify, local_only=True) as port:
            got = await port.imprint(Color.ORANGE, "Remote PED Vector", fresh)
        wipe(fresh)
        try:
            sealed = self.master.seal("rpv", got.secret)
        finally:
            got.wipe()
        with self.store.tx():
            self.store.set_meta("rpv_sealed", sealed.hex())
        self._event("rpv initialised")
        return "Remote PED Vector set in the HSM and on the orange PED key(s)."

    async def ped_vector_erase(self) -> str:
        self._require_so_if_initialised("erasing the RPV")
        await self.ped.disconnect()
        with self.store.tx():
            self.store.set_meta("rpv_sealed", None)
        self.store.checkpoint()
        self._event("rpv erased")
        return "Remote PED Vector erased; remote PED use needs a new `hsm ped vector init`."

    async def ped_connect(
        self, notify: Notify, host: str, port: int, *, peer: str | None = None
    ) -> str:
        """Open the remote PED link: to pedserver *host*:*port*, or over the peer link
        that the pedserver registered in pedclient as *peer* dialled in (peer-to-peer)."""
        if peer is None and not 1 <= port <= 65535:
            raise BadRequest(f"port {port} is not a TCP port (1-65535); pedserver uses 1503")
        if peer is not None and not peer.strip():
            raise BadRequest("--peer needs the name the pedserver is registered under in pedclient")
        rpv = self._rpv()
        notify("PED operation required to connect to Remote PED - use orange PED Key(s).")
        try:
            where = await self.ped.connect(host, port, rpv, notify, peer=peer)
        except PedUnavailable as exc:
            target = f"peer {peer}" if peer is not None else f"{host}:{port}"
            self._event("ped connect failed", address=target, reason=exc.message)
            raise
        finally:
            wipe(rpv)
        self._event("ped connected", address=where)
        return f"Remote PED connected ({where})."

    async def ped_disconnect(self) -> str:
        was = await self.ped.disconnect()
        if was:
            self._event("ped disconnected", reason="hsm ped disconnect")
            return "Remote PED disconnected."
        return "No Remote PED was connected."

    def ped_link_dropped(self, reason: str) -> None:
        """Called by the router when a remote link goes away by itself."""
        self._event("ped disconnected", reason=reason)

    def ped_timeouts(self) -> dict[str, int]:
        out = {}
        for name, d in pol.PED_TIMEOUTS.items():
            out[name] = int(self.store.get_meta(f"timeout.{name}") or d.default)
        return out

    def ped_timeout_set(self, kind: str, seconds: int) -> str:
        d = pol.PED_TIMEOUTS.get(kind)
        if d is None:
            raise BadRequest(f"timeout type {kind!r} is not one of: rped, pedk, pedo")
        value = d.default if seconds == 0 else seconds
        if not d.low <= value <= d.high:
            raise BadRequest(
                f"{kind} ({d.description}) takes {d.low}-{d.high} seconds "
                f"(0 restores the default {d.default}), not {seconds}"
            )
        with self.store.tx():
            self.store.set_meta(f"timeout.{kind}", str(value))
        self._event("ped timeout set", type=kind, seconds=value)
        return f"{kind} timeout ({d.description}) set to {value} s."

    # ------------------------------------------------------------------ audit

    async def audit_init(self, notify: Notify, force: bool) -> str:
        self._require_initialised()
        if self.store.get_role(HSM_SCOPE, Role.AUDITOR.value) is not None:
            if not self._auditor and self._so_key is None:
                raise NotLoggedIn(
                    "the auditor is initialised: re-initialising it needs the auditor "
                    "(`audit login`) or the HSM SO (`hsm login`) logged in"
                )
            self._confirm(
                force, "the auditor is already initialised; re-initialising replaces its white key"
            )
        async with self._ped(notify) as port:
            white = await self._imprint(port, Role.AUDITOR, "Auditor")
        aud_key = random_key()
        try:
            wrapped, _ = self._wrap_role(HSM_SCOPE, Role.AUDITOR, white, aud_key)
            with self.store.tx():
                self.store.put_role(HSM_SCOPE, Role.AUDITOR.value, white.keyset_id, wrapped)
        finally:
            white.wipe()
            wipe(aud_key)
        self._event("auditor initialised")
        return "Auditor initialised (white PED key imprinted). Log in with `audit login`."

    async def audit_login(self, notify: Notify) -> str:
        # No `_require_initialised`: the auditor survives zeroization (see Store.zeroize).
        key, _ = await self._login(HSM_SCOPE, Role.AUDITOR, notify)
        wipe(key)
        self._auditor = True
        return "Auditor logged in."

    def audit_logout(self) -> str:
        was, self._auditor = self._auditor, False
        if was:
            self._event("logout", role=Role.AUDITOR.value)
        return "Auditor logged out." if was else "The auditor was not logged in."

    def audit_show(self, tail: int | None) -> list[dict[str, Any]]:
        if not self._auditor:
            raise NotLoggedIn("only the auditor may read the audit log: run `audit login`")
        records = self.audit.records()
        return records[-tail:] if tail else records

    def audit_verify(self) -> dict[str, Any]:
        result = self.audit.verify()
        return {"ok": result.ok, "records": result.records, "problem": result.problem}
