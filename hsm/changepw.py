"""Changing a role's secret: prove the old PED key, imprint the new one, re-wrap in one step.

Theory of operation
-------------------
A role's PED secret only ever wraps the role's *key* (`hsm.enrol.wrap_role`): the HSM SO's
key, the partition SO's key, or the partition's data key for the Crypto Officer and
Crypto User (which also wrap it under ``HKDF(secret, challenge)`` for application
logins).  Objects are sealed under the data key, the CO escrow (policy 15) under the
partition SO's key, the partition's cloning domain under the device key: none of them
depends on a PED secret, so a new secret re-wraps the one role row and nothing else, and
the role key itself does not change (every object stays reachable; a rekey of the
objects is another operation).  The red (cloning domain) key is never changed here.

`change_secret` does it in this order:

1. the old key is read from the PED **as a login reads it** (`LoginService.login`, never
   the activation cache): a key of another keyset, a wrong PIN (and, with
   ``--secret-only``, a wrong current challenge, checked as an application login checks
   it) is counted exactly as a failed login, with the same lockout or zeroization; a
   wrong colour or a PED refusal is not;
2. the new key set is imprinted with the PED's usual questions (reuse, M of N, PIN,
   duplicates); reusing the role's own key set would keep the old secret: refused;
3. the new wraps (and the activation cache's sealed copy, replaced or dropped) are written
   in **one** store transaction.  A crash before its commit leaves the old secret valid
   (the newly imprinted keys open nothing), after it the new one: never neither.

Activation: a new challenge deactivates the role (RAM and sealed cache dropped), so
applications logged in with the old challenge are cut off at their next call
(`hsm.access`) and the administrator re-activates with `role activate`; a new PED secret
alone keeps an activated role activated, its cache now holding the new secret.
"""

from __future__ import annotations

import hmac

import attrs

from hsm.crypto import UnwrapFailed, derive_kek, unwrap, wipe
from hsm.enrol import imprint, wrap_role
from hsm.errors import InvalidCommand, LockedOut, NotInitialised, PolicyError
from hsm.logins import LoginService
from hsm.pedport import PedSecret
from hsm.policy import Role
from hsm.state import HsmState, Notify
from hsm.store import HSM_SCOPE, RoleRow

REUSED_OWN_KEYSET = (
    "the PED reused the key set the {title} already has: that keeps the old secret, so "
    "nothing was changed; run the command again and answer NO to 'Reuse an existing "
    "keyset?' (or present a key set of another {colour} key)"
)


@attrs.frozen
class Change:
    """What a change replaces: the PED secret, the challenge secret, or both."""

    secret: bool
    challenge: bool

    @property
    def words(self) -> str:
        if self.secret and self.challenge:
            return "PED secret and challenge secret"
        return "PED secret" if self.secret else "challenge secret"


def change_of(role: Role, challenge_only: bool, secret_only: bool) -> Change:
    """The change ``--challenge-only`` / ``--secret-only`` ask for (default: both, for the
    roles that have a challenge)."""
    if role not in (Role.CO, Role.CU):
        if challenge_only or secret_only:
            raise InvalidCommand(
                f"the {role.title} has no challenge secret; omit --challenge-only and "
                "--secret-only"
            )
        return Change(secret=True, challenge=False)
    if challenge_only and secret_only:
        raise InvalidCommand(
            "--challenge-only and --secret-only exclude each other; give neither to change both"
        )
    return Change(secret=not challenge_only, challenge=not secret_only)


async def _prove(st: HsmState, logins: LoginService, notify: Notify, scope: str, role: Role,
                 current_chal: bytes | None) -> tuple[bytearray, bytearray]:  # fmt: skip
    """Read the role's current key from the PED as a login does (counted; never the
    activation cache) and, if given, check its current challenge (counted as at a login):
    the role key and the old PED secret."""
    if current_chal is not None and (scope, role.value) not in st.ram.activation:
        # Not activated: the login service reads the PED; key and challenge in one attempt.
        key, old = await logins.login(
            scope, role, notify, challenge=current_chal, keep_secret=True
        )
    else:
        key, old = await logins.login(scope, role, notify, keep_secret=True)
        if current_chal is not None:
            # Activated: the cache holds the secret just proven on the PED, so the login
            # service checks the challenge with it (counted) and the PED is asked once.
            # The cache stays in place throughout: applications logged in meanwhile keep
            # their logins.
            try:
                other, _ = await logins.login(scope, role, notify, challenge=current_chal)
            except BaseException:
                wipe(key)
                wipe(old)
                raise
            wipe(other)
    assert old is not None  # keep_secret
    return key, old


def _opens(state: HsmState, scope: str, role: Role, secret: bytearray,
           wrapped_chal: bytes | None, challenge: bytes) -> bool:  # fmt: skip
    """Whether *challenge* with *secret* opens the role's challenge wrap (is the current one)."""
    if wrapped_chal is None:
        return False
    kek = derive_kek(secret, state.aad(scope, role.value, "chal"), challenge)
    try:
        wipe(unwrap(kek, wrapped_chal, state.aad(scope, role.value, "chal")))
    except UnwrapFailed:
        return False
    finally:
        wipe(kek)
    return True


async def change_secret(
    state: HsmState,
    logins: LoginService,
    notify: Notify,
    scope: str,
    role: Role,
    change: Change,
    *,
    by: Role,
    new_chal: tuple[bytes, bool] | None = None,
    current_chal: bytes | None = None,
) -> str:
    """Change *role*'s PED secret and/or challenge secret (see the module docstring).

    *new_chal* is the new challenge and whether the HSM generated it (then it is shown on
    the PED); *current_chal*, for a change of the PED secret alone of a role that has a
    challenge, the current one (the application login is re-wrapped under the new key
    with it).  *by* is the role that runs the command (audited).  Returns the sentence for
    the shell.
    """
    st = state
    where = "" if scope == HSM_SCOPE else f" of partition {scope!r}"
    row = st.role_row(scope, role)
    if change.challenge and (row.wrapped_chal is None or new_chal is None):
        raise NotInitialised(f"the {role.title}{where} has no challenge secret to change")
    chal, generated = new_chal if new_chal is not None else (current_chal, False)
    if row.wrapped_chal is not None and chal is None:
        raise InvalidCommand(
            "--secret-only keeps the challenge secret: give the current one with "
            "--challenge-file, so that application logins are re-sealed under the new key"
        )
    key, old = await _prove(st, logins, notify, scope, role, current_chal)
    got: PedSecret | None = None
    try:
        if change.challenge and not generated and chal is not None:
            if _opens(st, scope, role, old, row.wrapped_chal, chal):
                raise PolicyError(
                    "the challenge secret given is the current one; give a new one"
                    + (" (or keep it with --secret-only)" if change.secret else "")
                )
        label = role.title if scope == HSM_SCOPE else f"{role.title} {scope}"
        same_keyset = False
        async with st.ped_session(notify) as port:
            if change.secret:
                got = await imprint(port, role, label)
                same_keyset = got.keyset_id == row.keyset_id or hmac.compare_digest(
                    got.secret, old
                )
            if generated and not same_keyset:
                assert chal is not None
                await port.show(f"{role.title} new challenge secret: {chal.decode()}")
        if same_keyset:
            # Said after the PED session ends: an error inside it would abort the operation
            # on the PED and reach the shell as a PED failure instead of this sentence.
            raise PolicyError(REUSED_OWN_KEYSET.format(title=role.title, colour=role.color.label))
        new = got if got is not None else PedSecret(bytearray(old), row.keyset_id)
        deactivated = _commit(st, row, change, new, key, chal)
        if got is None:
            new.wipe()
    finally:
        wipe(key)
        wipe(old)
        if got is not None:
            got.wipe()
    st.event(
        "secret changed",
        role=role.value,
        partition=None if scope == HSM_SCOPE else scope,
        by=by.value,
        secret=change.secret,
        challenge=change.challenge,
        reused_keyset=bool(got is not None and got.reused),
        deactivated=deactivated,
    )
    return _said(role, where, change, got, generated, deactivated, scope)


def _commit(st: HsmState, row: RoleRow, change: Change, new: PedSecret, key: bytearray,
            chal: bytes | None) -> bool:  # fmt: skip
    """Write the new wraps and the activation cache in one transaction, then the RAM;
    True when the role was deactivated.  *row* is the role as it was proven."""
    scope, role = row.scope, Role(row.role)
    wrapped, wrapped_chal = wrap_role(st, scope, role, new, key, chal)
    at = (scope, role.value)
    sealed_before = any((p, r) == at for p, r, _, _ in st.store.activations())
    active = at in st.ram.activation or sealed_before
    sealed = None
    if not change.challenge and sealed_before and at in st.ram.activation:
        # An activated role stays activated: its sealed cache holds the new secret now.
        sealed = st.master.seal(st.aad(scope, role.value, "activation"), new.secret)
    with st.store.tx():
        now = st.store.get_role(scope, role.value)
        if now is None or now.locked or now.keyset_id != row.keyset_id:
            # The client path does not wait for the shell's PED operation: failed
            # application logins may have locked the role meanwhile (a permanent lock has
            # destroyed its wraps, which must not come back).  Nothing is written.
            raise LockedOut(
                f"the {role.title} was locked (or re-initialised) while the PED was busy; "
                "nothing was changed and the new key set opens nothing"
            )
        st.store.update_role(scope, role.value, keyset_id=new.keyset_id, wrapped=wrapped,
                             wrapped_chal=wrapped_chal)  # fmt: skip
        if change.challenge or (sealed_before and sealed is None):
            st.store.delete_activation(scope, role.value)
        elif sealed is not None:
            st.store.put_activation(scope, role.value, sealed, st.clock.now())
    if change.challenge:
        st.ram.drop_activation(scope, role.value)
        return active
    if at in st.ram.activation:
        wipe(st.ram.activation[at])
        st.ram.activation[at] = bytearray(new.secret)
    return False


def _said(role: Role, where: str, change: Change, got: PedSecret | None, generated: bool,
          deactivated: bool, scope: str) -> str:  # fmt: skip
    parts = [f"{role.title}{where}: {change.words} changed"]
    if got is not None:
        parts.append(
            f"{'an existing' if got.reused else 'a new'} {role.color.label} key set now "
            "opens it; the old key no longer does (presenting it counts as a failed login)"
        )
    if generated:
        parts.append("the new challenge secret is shown on the PED screen")
    if deactivated:
        parts.append(
            "the role was deactivated and its application logins end; activate it again "
            f"with `role activate --partition {scope} --name {role.value}`"
        )
    return "; ".join(parts) + "."
