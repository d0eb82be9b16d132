"""The emulated HSM: roles, partitions, policies, failure counters, activation, RPV.

Theory of operation
-------------------
`Hsm` holds the durable state (`hsm.store`), the device key (`hsm.crypto.MasterKey`), the
audit log and, in memory only, what a powered HSM keeps in RAM: which roles are logged in
(with the keys they opened) and the activation cache.  A restart of the process is a power
cycle: RAM is gone, except auto-activated secrets, which are sealed on disk and come back
if the HSM was off for at most two hours.

A PED login goes like this (`_login`):

1. the role must exist and not be locked (a timed auditor lock that has run out unlocks);
2. the PED reads the key of the role's colour (`PedPort.read_secret`); a wrong colour, a
   PED that is gone, busy, timed out or cancelled raises and is **not counted**; a key of
   another keyset **is counted**;
3. the failure counter is incremented and **committed** before the secret is even tried
   (an interrupted attempt counts, as on a smart card: otherwise cutting the power after
   each guess would give unlimited guesses);
4. the secret (and the challenge, for an application login) derives the KEK that must
   unwrap the role key: success resets the counter, failure applies the threshold rule of
   `hsm.policy.outcome_of` in the same transaction, then the result is reported.

Commands are serialised by the daemon (one at a time, like the HSM's command processor),
so the engine needs no locking of its own.
"""

from __future__ import annotations

import contextlib
import secrets
import string
from collections.abc import AsyncIterator, Callable
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

from hsm import policy as pol
from hsm.audit import AuditLog
from hsm.clock import Clock
from hsm.crypto import (
    MasterKey,
    UnwrapFailed,
    derive_kek,
    random_key,
    unwrap,
    wipe,
    wrap,
)
from hsm.errors import (
    AlreadyExists,
    BadRequest,
    ConfirmationRequired,
    LockedOut,
    LoginFailed,
    NotFound,
    NotInitialised,
    NotLoggedIn,
    PedUnavailable,
    PolicyError,
    Zeroized,
)
from hsm.pedport import KeysetMismatch, PedPort, PedSecret
from hsm.policy import Outcome, Role
from hsm.store import HSM_SCOPE, RoleRow, Store
from keys.colors import Color

FIRMWARE = "7.8.4-emulated"
MODEL = "pedhsm emulated PED-authenticated HSM"
ATTEND = "Please attend to the PED."
MAX_LABEL = 64
MAX_OBJECT = 64 * 1024
MAX_CHALLENGE = 256

Notify = Callable[[str], None]
_LOCK_STATE = {
    "": "ok",
    "timed": "locked (unlocks by itself)",
    "reset": "locked (partition SO reset needed)",
    "permanent": "locked (permanent)",
}


class PedAccess(Protocol):
    """What the engine needs from the daemon's PED router (`hsm.pedlink.PedRouter`)."""

    def session(
        self, *, local_only: bool = False, notify: Notify | None = None
    ) -> contextlib.AbstractAsyncContextManager[PedPort]: ...

    async def connect(self, host: str, port: int, rpv: bytearray, notify: Notify) -> str: ...

    async def disconnect(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


def _check_name(kind: str, name: str) -> str:
    ok = string.ascii_letters + string.digits + "-_."
    if not name or len(name) > MAX_LABEL or name[0] == "#" or any(c not in ok for c in name):
        raise BadRequest(
            f"{kind} {name!r} is not valid: use 1-{MAX_LABEL} letters, digits, '-', '_' or '.'"
        )
    return name


class Hsm:
    def __init__(
        self,
        home: Path,
        store: Store,
        master: MasterKey,
        clock: Clock,
        ped: PedAccess,
        serial: str | None = None,
    ) -> None:
        self.home = home
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
        self.booted = clock.now()
        # RAM of the powered HSM.
        self._so_key: bytearray | None = None
        self._auditor = False
        self._partition_login: dict[str, tuple[Role, bytearray]] = {}
        self._activation: dict[tuple[str, str], bytearray] = {}

    # ------------------------------------------------------------------ power on / off

    def power_on(self) -> list[str]:
        """Start-up checks: finish interrupted threshold outcomes, restore auto-activation."""
        notes: list[str] = []
        self._event("power on", serial=self.serial)
        for row in self.store.all_roles():
            if row.role == Role.DOMAIN.value or row.locked:
                continue
            role = Role(row.role)
            threshold = self._threshold(row.scope, role)
            if row.failures >= threshold:
                notes.append(f"{role.title} reached its failed-login threshold before power off")
                with contextlib.suppress(LoginFailed, Zeroized, LockedOut):
                    self._apply_outcome(row.scope, role, row.failures, threshold)
        notes.extend(self._restore_auto_activation())
        return notes

    def _restore_auto_activation(self) -> list[str]:
        now, notes = self.clock.now(), []
        for partition, role, sealed, stamped in self.store.activations():
            part = self.store.get_partition(partition)
            off_for = now - stamped
            allowed = bool(part and part.policies.get(pol.POLICY_AUTO_ACTIVATION, 0))
            if allowed and 0 <= off_for <= pol.AUTO_ACTIVATION_MAX_OFF_SECONDS:
                with contextlib.suppress(UnwrapFailed):
                    self._activation[(partition, role)] = self.master.unseal(
                        self._aad(partition, role, "activation"), sealed
                    )
                    notes.append(f"{partition}: {role} auto-activated again")
                    continue
            with self.store.tx():
                self.store.delete_activation(partition, role)
            self._event(
                "activation expired", partition=partition, role=role, off_seconds=int(off_for)
            )
            notes.append(f"{partition}: {role} activation dropped (HSM was off too long)")
        self.heartbeat()
        return notes

    def heartbeat(self) -> None:
        """Record that the HSM is powered (bounds how long it was off at the next start)."""
        if self.store.activations():
            with self.store.tx():
                self.store.stamp_activations(self.clock.now())

    def power_off(self) -> None:
        self.heartbeat()
        self._logout_all()
        for buf in self._activation.values():
            wipe(buf)
        self._activation.clear()
        self._event("power off")

    # ------------------------------------------------------------------ helpers

    def _event(self, event: str, **details: Any) -> None:
        self.audit.append(event, wall_time=self.clock.now(), **details)

    def _aad(self, scope: str, role: str, kind: str) -> str:
        return f"pedhsm/v1|{self.serial}|{scope}|{role}|{kind}"

    @property
    def initialised(self) -> bool:
        return self.store.get_meta("initialised") == "1"

    def _require_initialised(self) -> None:
        if not self.initialised:
            raise NotInitialised("the HSM is zeroized; initialise it first with `hsm init`")

    def _require_so(self) -> bytearray:
        self._require_initialised()
        if self._so_key is None:
            raise NotLoggedIn("the HSM SO must be logged in: run `hsm login` first")
        return self._so_key

    def _partition(self, name: str, *, initialised: bool = True) -> Any:
        part = self.store.get_partition(name)
        if part is None:
            raise NotFound(f"no partition named {name!r}; `hsm show` lists them")
        if initialised and not part.initialised:
            raise NotInitialised(
                f"partition {name!r} is not initialised; run `partition init --name {name}`"
            )
        return part

    def _partition_role_key(self, name: str, *roles: Role) -> tuple[Role, bytearray]:
        logged = self._partition_login.get(name)
        if logged is None or logged[0] not in roles:
            who = " or ".join(r.title for r in roles)
            flag = "so" if roles == (Role.PARTITION_SO,) else roles[0].value
            raise NotLoggedIn(
                f"this needs the {who} of partition {name!r} logged in: "
                f"run `role login --partition {name} --name {flag}`"
            )
        return logged

    def _threshold(self, scope: str, role: Role) -> int:
        policies = None
        if scope != HSM_SCOPE:
            part = self.store.get_partition(scope)
            policies = part.policies if part else None
        return pol.threshold_of(role, policies)

    def _role_row(self, scope: str, role: Role) -> RoleRow:
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

    @contextlib.asynccontextmanager
    async def _ped(self, notify: Notify, *, local_only: bool = False) -> AsyncIterator[PedPort]:
        notify(ATTEND)
        async with self.ped.session(local_only=local_only, notify=notify) as port:
            yield port

    # ------------------------------------------------------------------ login core

    def _check_lock(self, scope: str, role: Role, row: RoleRow) -> RoleRow:
        if row.locked == "timed":
            now = self.clock.now()
            if now < row.locked_until:
                raise LockedOut(
                    f"the {role.title} is locked out after too many failed logins; it unlocks "
                    f"by itself in {int(row.locked_until - now + 0.999)} s"
                )
            with self.store.tx():
                self.store.update_role(scope, role.value, locked="", failures=0, locked_until=0)
            self._event("lockout ended", role=role.value)
            return self._role_row(scope, role)
        if row.locked == "reset":
            raise LockedOut(
                f"the Crypto Officer and Crypto User of partition {scope!r} are locked after "
                "too many failed logins; the partition SO must run "
                f"`role resetpw --partition {scope} --name co`"
            )
        if row.locked == "permanent":
            raise LockedOut(
                f"the {role.title} of partition {scope!r} is permanently locked (HSM policy 15 "
                "is off) and its contents are unreachable; re-initialise the partition "
                f"(`partition init --name {scope}`) and restore from a backup"
            )
        return row

    async def _login(
        self,
        scope: str,
        role: Role,
        notify: Notify,
        *,
        challenge: bytes | None = None,
        keep_secret: bool = False,
    ) -> tuple[bytearray, bytearray | None]:
        """Authenticate *role*; return its role key (and a copy of the PED secret if asked)."""
        row = self._check_lock(scope, role, self._role_row(scope, role))
        if challenge is not None and row.wrapped_chal is None:
            raise BadRequest(f"the {role.title} has no challenge secret; omit --challenge-file")
        cached = self._activation.get((scope, role.value)) if challenge is not None else None
        if cached is not None:
            secret = bytearray(cached)
        else:
            label = role.title if scope == HSM_SCOPE else f"{role.title} {scope}"
            try:
                async with self._ped(notify) as port:
                    got = await port.read_secret(role.color, row.keyset_id, label)
            except KeysetMismatch:
                self._begin_attempt(scope, role)
                self._fail(scope, role, "a key of the right colour but another keyset")
            secret = got.secret
        try:
            self._begin_attempt(scope, role)
            try:
                if challenge is None:
                    kek = derive_kek(secret, self._aad(scope, role.value, "ped"))
                    key = unwrap(kek, row.wrapped, self._aad(scope, role.value, "ped"))
                else:
                    assert row.wrapped_chal is not None  # checked before the PED was asked
                    kek = derive_kek(secret, self._aad(scope, role.value, "chal"), challenge)
                    key = unwrap(kek, row.wrapped_chal, self._aad(scope, role.value, "chal"))
                wipe(kek)
            except UnwrapFailed:
                if challenge is None:
                    why = "wrong PED key secret or PED PIN"
                elif cached is not None:
                    why = "wrong challenge secret"
                else:
                    why = "wrong PED key secret, PED PIN or challenge secret"
                self._fail(scope, role, why)
            with self.store.tx():
                self.store.update_role(scope, role.value, failures=0)
            self._event(
                "login",
                role=role.value,
                partition=None if scope == HSM_SCOPE else scope,
                via="activation" if cached is not None else "PED",
            )
            return key, (bytearray(secret) if keep_secret else None)
        finally:
            wipe(secret)

    def _begin_attempt(self, scope: str, role: Role) -> None:
        with self.store.tx():
            row = self._role_row(scope, role)
            self.store.update_role(scope, role.value, failures=row.failures + 1)

    def _fail(self, scope: str, role: Role, why: str) -> None:
        row = self._role_row(scope, role)
        threshold = self._threshold(scope, role)
        self._event(
            "login failed",
            role=role.value,
            partition=None if scope == HSM_SCOPE else scope,
            reason=why,
            failures=row.failures,
            threshold=threshold,
        )
        self._apply_outcome(scope, role, row.failures, threshold)
        left = threshold - row.failures
        caution = ""
        if role is Role.HSM_SO:
            caution = (
                f" Caution: {left} HSM SO login attempt(s) left; at {threshold} consecutive "
                "failures the HSM will be ZEROIZED."
            )
        raise LoginFailed(
            f"{role.title} login failed ({why}); {row.failures} consecutive failure(s) of "
            f"{threshold} allowed.{caution}"
        )

    def _apply_outcome(self, scope: str, role: Role, failures: int, threshold: int) -> None:
        outcome = pol.outcome_of(role, failures, threshold, self._so_can_reset())
        if outcome is Outcome.NONE:
            return
        if outcome is Outcome.ZEROIZE_HSM:
            self._zeroize(f"{threshold} consecutive failed HSM SO logins")
            raise Zeroized(
                f"HSM SO login failed {failures} times in a row: the HSM has been ZEROIZED "
                "(all partitions and objects are gone); re-initialise it with `hsm init`"
            )
        if outcome is Outcome.ZEROIZE_PARTITION:
            with self.store.tx():
                self.store.clear_partition(scope)
            self._drop_partition_ram(scope)
            self.store.checkpoint()
            self._event("partition zeroized", partition=scope, reason="partition SO lockout")
            raise Zeroized(
                f"partition SO login failed {failures} times in a row: partition {scope!r} "
                f"has been zeroized; re-initialise it with `partition init --name {scope}`"
            )
        if outcome is Outcome.LOCK_TIMED:
            until = self.clock.now() + pol.AUDITOR_LOCK_SECONDS
            with self.store.tx():
                self.store.update_role(scope, role.value, locked="timed", locked_until=until)
            self._event("lockout", role=role.value, seconds=int(pol.AUDITOR_LOCK_SECONDS))
            raise LockedOut(
                f"{role.title} login failed {failures} times in a row: locked out for "
                f"{int(pol.AUDITOR_LOCK_SECONDS // 60)} minutes (it unlocks by itself)"
            )
        # CO / CU
        permanent = outcome is Outcome.LOCK_PERMANENT
        with self.store.tx():
            for r in (Role.CO, Role.CU):
                if self.store.get_role(scope, r.value) is None:
                    continue
                if permanent:
                    # Crypto-shred: every wrapped copy of the partition key goes.
                    self.store.update_role(
                        scope, r.value, locked="permanent", wrapped=b"", wrapped_chal=None
                    )
                else:
                    self.store.update_role(scope, r.value, locked="reset")
            if permanent:
                self.store.update_partition(scope, escrow=None)
            self.store.delete_activation(scope)
        if permanent:
            self.store.checkpoint()
        self._drop_partition_ram(scope, keep_so=True)
        self._event("lockout", role="co+cu", partition=scope, permanent=permanent)
        if permanent:
            raise LockedOut(
                f"{role.title} login failed {failures} times in a row: the Crypto Officer "
                f"and Crypto User of partition {scope!r} are permanently locked and its "
                "contents are unreachable (HSM policy 15 is off); re-initialise the "
                "partition and restore from a backup"
            )
        raise LockedOut(
            f"{role.title} login failed {failures} times in a row: the Crypto Officer and "
            f"Crypto User of partition {scope!r} are locked; the partition SO can unlock "
            f"them with `role resetpw --partition {scope} --name co`"
        )

    def _so_can_reset(self) -> bool:
        return self._hsm_policies().get(pol.POLICY_SO_RESET, 0) == 1

    def _hsm_policies(self) -> dict[int, int]:
        out = {code: d.default for code, d in pol.HSM_POLICIES.items()}
        for code in pol.HSM_POLICIES:
            value = self.store.get_meta(f"policy.{code}")
            if value is not None:
                out[code] = int(value)
        return out

    def _drop_partition_ram(self, name: str, *, keep_so: bool = False) -> None:
        logged = self._partition_login.get(name)
        if logged and not (keep_so and logged[0] is Role.PARTITION_SO):
            wipe(self._partition_login.pop(name)[1])
        for key in [k for k in self._activation if k[0] == name]:
            wipe(self._activation.pop(key))

    def _logout_all(self) -> None:
        wipe(self._so_key)
        self._so_key = None
        self._auditor = False
        for _, key in self._partition_login.values():
            wipe(key)
        self._partition_login.clear()

    def _zeroize(self, reason: str) -> None:
        with self.store.tx():
            self.store.zeroize()
            self.store.set_meta("initialised", "0")
            self.store.set_meta("label", None)
        self.store.checkpoint()
        self._logout_all()
        for buf in self._activation.values():
            wipe(buf)
        self._activation.clear()
        self._event("hsm zeroized", reason=reason)

    async def _imprint(
        self, port: PedPort, role: Role, label: str, secret: bytearray | None = None
    ) -> PedSecret:
        fresh = secret if secret is not None else random_key()
        try:
            return await port.imprint(role.color, label, fresh)
        finally:
            if secret is None:
                wipe(fresh)

    def _wrap_role(
        self,
        scope: str,
        role: Role,
        got: PedSecret,
        key: bytearray,
        challenge: bytes | None = None,
    ) -> tuple[bytes, bytes | None]:
        kek = derive_kek(got.secret, self._aad(scope, role.value, "ped"))
        wrapped = wrap(kek, key, self._aad(scope, role.value, "ped"))
        wipe(kek)
        wrapped_chal = None
        if challenge is not None:
            ckek = derive_kek(got.secret, self._aad(scope, role.value, "chal"), challenge)
            wrapped_chal = wrap(ckek, key, self._aad(scope, role.value, "chal"))
            wipe(ckek)
        return wrapped, wrapped_chal

    @staticmethod
    def _confirm(force: bool, what: str) -> None:
        if not force:
            raise ConfirmationRequired(
                f"{what}; confirm with --force (or answer yes when the shell asks)"
            )

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

    async def ped_connect(self, notify: Notify, host: str, port: int) -> str:
        if not 1 <= port <= 65535:
            raise BadRequest(f"port {port} is not a TCP port (1-65535); pedserver uses 1503")
        rpv = self._rpv()
        notify("PED operation required to connect to Remote PED - use orange PED Key(s).")
        try:
            where = await self.ped.connect(host, port, rpv, notify)
        except PedUnavailable as exc:
            self._event("ped connect failed", address=f"{host}:{port}", reason=exc.message)
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

    # ------------------------------------------------------------------ audit

    async def audit_init(self, notify: Notify, force: bool) -> str:
        self._require_initialised()
        if self.store.get_role(HSM_SCOPE, Role.AUDITOR.value) is not None:
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
