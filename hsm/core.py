"""The core of the emulated HSM: state, power cycle, failed-login counting and outcomes.

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
    BadRequest,
    ConfirmationRequired,
    LockedOut,
    LoginFailed,
    NotFound,
    NotInitialised,
    NotLoggedIn,
    Zeroized,
)
from hsm.pedport import KeysetMismatch, PedPort, PedSecret
from hsm.policy import Outcome, Role
from hsm.store import HSM_SCOPE, RoleRow, Store

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


class HsmCore:
    """State, power, helpers and the login core shared by every command."""

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
