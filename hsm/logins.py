"""The login service: the one place where a login is checked, a failure counted and a
threshold applied.

Theory of operation
-------------------
A login goes like this (`LoginService.login`):

1. the role must exist and not be locked (a timed auditor lock that has run out unlocks);
2. the PED reads the key of the role's colour (`PedPort.read_secret`); a wrong colour, a
   PED that is gone, busy, timed out or cancelled raises and is **not counted** (but
   audited: a ``login refused`` record with its reason and ``counted: false``); a key of
   another keyset **is counted**.  For an application login (a challenge is given) of an
   activated role, the PED secret comes from the activation cache instead;
3. after a PED read the role is read again: the client path does not wait for the shell's
   PED operations, so failed application logins may have locked it meanwhile (refused,
   not counted, audited as ``login refused`` with reason ``locked-while-waiting``);
4. the failure counter is incremented and **committed** before the secret is even tried
   (an interrupted attempt counts, as on a smart card: otherwise cutting the power after
   each guess would give unlimited guesses);
5. the secret (and the challenge, for an application login) derives the KEK that must
   unwrap the role key: success resets the counter, failure applies the threshold rule of
   `hsm.policy.outcome_of`, then the result is reported.

At power on, `finish_interrupted` applies a threshold that was reached just before a
crash, before anything else runs.

Every way in goes through `login`: the shell's `hsm login`, `role login`, `audit login`
and the client path (`hsm.access`: PKCS#11 applications over mutual TLS on port 1792),
which logs a partition's CO or CU in with the challenge secret: it calls
``login(partition, role, notify, challenge=...)`` and so gets the same counting, the same
thresholds and the same audit records as the shell.
"""

from __future__ import annotations

import contextlib

from hsm import policy as pol
from hsm.crypto import UnwrapFailed, derive_kek, unwrap, wipe
from hsm.errors import InvalidCommand, LockedOut, LoginFailed, PedUnavailable, Zeroized
from hsm.pedport import WrongKeyColor, WrongKeyset
from hsm.policy import Outcome, Role
from hsm.state import HsmState, Notify
from hsm.store import HSM_SCOPE, RoleRow


class LoginService:
    """Logins of every role, their failure counters and what a threshold does."""

    def __init__(self, state: HsmState) -> None:
        self._state = state

    # ------------------------------------------------------------------ power on

    def finish_interrupted(self) -> list[str]:
        """Apply the outcome of thresholds reached just before a power cut."""
        notes: list[str] = []
        for row in self._state.store.all_roles():
            if row.role == Role.DOMAIN.value or row.locked:
                continue
            role = Role(row.role)
            threshold = self._state.threshold(row.scope, role)
            if row.failures >= threshold:
                notes.append(f"{role.title} reached its failed-login threshold before power off")
                with contextlib.suppress(LoginFailed, Zeroized, LockedOut):
                    self._apply_outcome(row.scope, role, row.failures, threshold)
        return notes

    # ------------------------------------------------------------------ login

    async def login(
        self,
        scope: str,
        role: Role,
        notify: Notify,
        *,
        challenge: bytes | bytearray | None = None,
        keep_secret: bool = False,
        client: str | None = None,
    ) -> tuple[bytearray, bytearray | None]:
        """Authenticate *role*; return its role key (and a copy of the PED secret if asked).

        *client* names the registered client a login over the client path came from: its
        audit records say who tried, as the client's other records do.
        """
        st = self._state
        who: dict[str, str] = {} if client is None else {"client": client}
        row = self._check_lock(scope, role, st.role_row(scope, role))
        if challenge is not None and row.wrapped_chal is None:
            raise InvalidCommand(f"the {role.title} has no challenge secret; omit --challenge-file")
        cached = st.ram.activation.get((scope, role.value)) if challenge is not None else None
        caution = self.caution(scope, role, row)
        if caution:
            notify(caution)
        if cached is not None:
            secret = bytearray(cached)
        else:
            label = role.title if scope == HSM_SCOPE else f"{role.title} {scope}"
            try:
                async with st.ped_session(notify) as port:
                    got = await port.read_secret(role.color, row.keyset_id, label)
            except WrongKeyset:
                self._after_ped_wait(scope, role, who)  # a locked role is not counted again
                self._count_attempt(scope, role)
                self._fail(scope, role, "a key of the right colour but another keyset", who)
            except (WrongKeyColor, PedUnavailable) as exc:
                # Refused before any secret was tried: not counted, but audited.
                outcome = exc.outcome if isinstance(exc, PedUnavailable) else exc.code
                st.event(
                    "login refused",
                    role=role.value,
                    partition=None if scope == HSM_SCOPE else scope,
                    reason=outcome,
                    counted=False,
                    **who,
                )
                raise
            secret = got.secret
        try:
            if cached is None:
                row = self._after_ped_wait(scope, role, who)
            self._count_attempt(scope, role)
            try:
                if challenge is None:
                    kek = derive_kek(secret, st.aad(scope, role.value, "ped"))
                    key = unwrap(kek, row.wrapped, st.aad(scope, role.value, "ped"))
                else:
                    assert row.wrapped_chal is not None  # checked before the PED was asked
                    kek = derive_kek(secret, st.aad(scope, role.value, "chal"), challenge)
                    key = unwrap(kek, row.wrapped_chal, st.aad(scope, role.value, "chal"))
                wipe(kek)
            except UnwrapFailed:
                if challenge is None:
                    why = "wrong PED key secret or PED PIN"
                elif cached is not None:
                    why = "wrong challenge secret"
                else:
                    why = "wrong PED key secret, PED PIN or challenge secret"
                self._fail(scope, role, why, who)
            with st.store.tx():
                st.store.update_role(scope, role.value, failures=0)
            st.event(
                "login",
                role=role.value,
                partition=None if scope == HSM_SCOPE else scope,
                via="activation" if cached is not None else "PED",
                **who,
            )
            return key, (bytearray(secret) if keep_secret else None)
        finally:
            wipe(secret)

    def _after_ped_wait(self, scope: str, role: Role, who: dict[str, str]) -> RoleRow:
        """The role as it is now that the PED answered.  The client path does not wait for
        the shell's PED operations (`hsm.ntlsd`), so failed application logins may have
        locked the role while its key was read; a permanent lock destroyed its wraps.
        Refused, not counted (the attempt never reached the secret), audited."""
        st = self._state
        try:
            return self._check_lock(scope, role, st.role_row(scope, role))
        except LockedOut:
            st.event(
                "login refused",
                role=role.value,
                partition=None if scope == HSM_SCOPE else scope,
                reason="locked-while-waiting",
                counted=False,
                **who,
            )
            raise

    def caution(self, scope: str, role: Role, row: RoleRow) -> str:
        """Luna's warning before the attempt whose failure locks out or zeroizes ("" when
        more than one attempt is left)."""
        st = self._state
        threshold = st.threshold(scope, role)
        if threshold - row.failures != 1:
            return ""
        where = f" of partition {scope}" if scope != HSM_SCOPE else ""
        outcome = pol.outcome_of(role, threshold, threshold, st.so_can_reset())
        then = {
            Outcome.ZEROIZE_HSM: "zeroizes the HSM",
            Outcome.ZEROIZE_PARTITION: f"zeroizes partition {scope}",
            Outcome.LOCK_TIMED: f"locks the {role.title} out for "
            f"{int(pol.AUDITOR_LOCK_SECONDS // 60)} minutes",
            Outcome.LOCK_UNTIL_RESET: f"locks the Crypto Officer and Crypto User of partition "
            f"{scope} until the partition SO resets them",
            Outcome.LOCK_PERMANENT: f"locks the Crypto Officer and Crypto User of partition "
            f"{scope} for good and makes its contents unreachable",
        }.get(outcome, "locks it out")
        return f"Caution: 1 {role.title}{where} login attempt left; another failure {then}."

    def _check_lock(self, scope: str, role: Role, row: RoleRow) -> RoleRow:
        st = self._state
        if row.locked == "timed":
            now = st.clock.now()
            if now < row.locked_until:
                raise LockedOut(
                    f"the {role.title} is locked out after too many failed logins; it unlocks "
                    f"by itself in {int(row.locked_until - now + 0.999)} s"
                )
            with st.store.tx():
                st.store.update_role(scope, role.value, locked="", failures=0, locked_until=0)
            st.event("lockout ended", role=role.value)
            return st.role_row(scope, role)
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

    # ------------------------------------------------------------------ failures

    def _count_attempt(self, scope: str, role: Role) -> None:
        """Commit one more failure before the secret is tried (see the module docstring)."""
        st = self._state
        with st.store.tx():
            row = st.role_row(scope, role)
            st.store.update_role(scope, role.value, failures=row.failures + 1)

    def _fail(self, scope: str, role: Role, why: str, who: dict[str, str]) -> None:
        st = self._state
        row = st.role_row(scope, role)
        threshold = st.threshold(scope, role)
        st.event(
            "login failed",
            role=role.value,
            partition=None if scope == HSM_SCOPE else scope,
            reason=why,
            failures=row.failures,
            threshold=threshold,
            **who,
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
        st = self._state
        outcome = pol.outcome_of(role, failures, threshold, st.so_can_reset())
        if outcome is Outcome.NONE:
            return
        if outcome is Outcome.ZEROIZE_HSM:
            st.zeroize(f"{threshold} consecutive failed HSM SO logins")
            raise Zeroized(
                f"HSM SO login failed {failures} times in a row: the HSM has been ZEROIZED "
                "(all partitions and objects are gone); re-initialise it with `hsm init`"
            )
        if outcome is Outcome.ZEROIZE_PARTITION:
            with st.store.tx():
                st.store.clear_partition(scope)
            st.ram.drop_partition(scope)
            st.store.checkpoint()
            st.event("partition zeroized", partition=scope, reason="partition SO lockout")
            raise Zeroized(
                f"partition SO login failed {failures} times in a row: partition {scope!r} "
                f"has been zeroized; re-initialise it with `partition init --name {scope}`"
            )
        if outcome is Outcome.LOCK_TIMED:
            until = st.clock.now() + pol.AUDITOR_LOCK_SECONDS
            with st.store.tx():
                st.store.update_role(scope, role.value, locked="timed", locked_until=until)
            st.event("lockout", role=role.value, seconds=int(pol.AUDITOR_LOCK_SECONDS))
            raise LockedOut(
                f"{role.title} login failed {failures} times in a row: locked out for "
                f"{int(pol.AUDITOR_LOCK_SECONDS // 60)} minutes (it unlocks by itself)"
            )
        permanent = outcome is Outcome.LOCK_PERMANENT
        self._lock_partition_users(scope, role, failures, permanent=permanent)

    def _lock_partition_users(
        self, scope: str, role: Role, failures: int, *, permanent: bool
    ) -> None:
        """The CO / CU outcome: both locked until reset, or crypto-shredded for good."""
        st = self._state
        with st.store.tx():
            for r in (Role.CO, Role.CU):
                if st.store.get_role(scope, r.value) is None:
                    continue
                if permanent:
                    # Crypto-shred: every wrapped copy of the partition key goes.
                    st.store.update_role(
                        scope, r.value, locked="permanent", wrapped=b"", wrapped_chal=None
                    )
                else:
                    st.store.update_role(scope, r.value, locked="reset")
            if permanent:
                st.store.update_partition(scope, escrow=None)
            st.store.delete_activation(scope)
        if permanent:
            st.store.checkpoint()
        st.ram.drop_partition(scope, keep_so=True)
        st.event("lockout", role="co+cu", partition=scope, permanent=permanent)
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
