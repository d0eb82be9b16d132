"""Partition role commands: init, login, logout, activate, deactivate, reset of the CO, changepw."""

from __future__ import annotations

import secrets
import string

from hsm import policy as pol
from hsm.activation import Activation
from hsm.changepw import change_of, change_secret
from hsm.crypto import derive_kek, random_key, unwrap, wipe, wrap
from hsm.enrol import imprint, wrap_role
from hsm.errors import AlreadyExists, InvalidCommand, NotInitialised, PolicyError
from hsm.logins import LoginService
from hsm.policy import Role
from hsm.state import HsmState, Notify

MAX_CHALLENGE = 256


def parse_role(text: str, allowed: tuple[Role, ...]) -> Role:
    """The role a ``--name`` names, if it is one of *allowed*."""
    for role in allowed:
        if text.lower() == role.value:
            return role
    names = "|".join(r.value for r in allowed)
    raise InvalidCommand(f"role {text!r} is not valid here; use --name {names}")


def new_challenge(challenge: bytes | None) -> tuple[bytes, bool]:
    """The challenge secret given, or a generated one (then shown on the PED: True)."""
    if challenge is not None:
        if not 1 <= len(challenge) <= MAX_CHALLENGE:
            raise InvalidCommand(f"a challenge secret has 1-{MAX_CHALLENGE} bytes")
        return challenge, False
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16)).encode(), True


class RoleCommands:
    """``role ...`` commands: the partition SO, Crypto Officer and Crypto User."""

    def __init__(self, state: HsmState, logins: LoginService, activation: Activation) -> None:
        self._state = state
        self._logins = logins
        self._activation = activation

    async def init(self, notify: Notify, name: str, role_name: str, challenge: bytes | None) -> str:
        st = self._state
        role = parse_role(role_name, (Role.CO, Role.CU))
        st.partition(name)
        if st.store.get_role(name, role.value) is not None:
            raise AlreadyExists(
                f"the {role.title} of partition {name!r} is already initialised"
                + (
                    f"; reset it with `role resetpw --partition {name} --name co`"
                    if role is Role.CO
                    else ""
                )
            )
        so_key: bytearray | None
        if role is Role.CO:
            _, so_key = st.partition_role_key(name, Role.PARTITION_SO)
            data_key = random_key()
        else:
            _, co_key = st.partition_role_key(name, Role.CO)
            data_key = bytearray(co_key)
            so_key = None
        chal, generated = new_challenge(challenge)
        try:
            async with st.ped_session(notify) as port:
                got = await imprint(port, role, f"{role.title} {name}")
                if generated:
                    await port.show(f"{role.title} challenge secret: {chal.decode()}")
            try:
                wrapped, wrapped_chal = wrap_role(st, name, role, got, data_key, chal)
            finally:
                got.wipe()
            escrow: bytes | None = None
            if role is Role.CO and st.so_can_reset() and so_key is not None:
                # Policy 15 on: the partition SO can later re-wrap the data key for a new CO.
                ekek = derive_kek(so_key, st.aad(name, "so", "escrow"))
                escrow = wrap(ekek, data_key, st.aad(name, "co", "escrow"))
                wipe(ekek)
            with st.store.tx():
                st.store.put_role(name, role.value, got.keyset_id, wrapped, wrapped_chal)
                if escrow is not None:
                    st.store.update_partition(name, escrow=escrow)
        finally:
            wipe(data_key)
        st.event("role initialised", partition=name, role=role.value)
        shown = " The challenge secret is shown on the PED screen." if generated else ""
        return f"{role.title} of partition {name!r} initialised.{shown}"

    async def login(
        self, notify: Notify, name: str, role_name: str, challenge: bytes | None
    ) -> str:
        st = self._state
        role = parse_role(role_name, (Role.PARTITION_SO, Role.CO, Role.CU))
        part = st.partition(name)
        if challenge is not None and role is Role.PARTITION_SO:
            raise InvalidCommand("the partition SO has no challenge secret; omit --challenge-file")
        # Policy 22: the PED secret is cached the first time the role uses the PED.
        activation = (
            st.partition_policies(part)[pol.POLICY_ACTIVATION] == 1
            and (name, role.value) not in st.ram.activation
        )
        key, secret = await self._logins.login(
            name,
            role,
            notify,
            challenge=challenge,
            keep_secret=activation and role is not Role.PARTITION_SO,
        )
        via = ""
        if secret is not None:
            self._activation.activate(name, role, part, secret)
            via = " (role activated)"
        old = st.ram.partition_login.pop(name, None)
        if old:
            wipe(old[1])
        st.ram.partition_login[name] = (role, key)
        return f"{role.title} of partition {name!r} logged in{via}."

    def logout(self, name: str | None) -> str:
        st = self._state
        names = [name] if name else list(st.ram.partition_login)
        out = []
        for n in names:
            logged = st.ram.partition_login.pop(n, None)
            if logged:
                wipe(logged[1])
                st.event("logout", partition=n, role=logged[0].value)
                out.append(f"{logged[0].title} of partition {n!r} logged out.")
        return "\n".join(out) or "No partition role was logged in."

    async def activate(self, notify: Notify, name: str, role_name: str) -> str:
        st = self._state
        role = parse_role(role_name, (Role.CO, Role.CU))
        part = st.partition(name)
        if st.partition_policies(part)[pol.POLICY_ACTIVATION] != 1:
            raise PolicyError(
                f"activation is not allowed on partition {name!r}: the partition SO must set "
                f"policy 22 (`partition changepolicy --name {name} --policy 22 --value 1`)"
            )
        key, secret = await self._logins.login(name, role, notify, keep_secret=True)
        wipe(key)
        assert secret is not None
        self._activation.activate(name, role, part, secret)
        return f"{role.title} of partition {name!r} activated."

    def deactivate(self, name: str, role_name: str) -> str:
        st = self._state
        role = parse_role(role_name, (Role.CO, Role.CU))
        st.partition(name, initialised=False)
        st.ram.drop_activation(name, role.value)
        with st.store.tx():
            st.store.delete_activation(name, role.value)
        st.event("role deactivated", partition=name, role=role.value)
        return f"{role.title} of partition {name!r} deactivated."

    async def resetpw(
        self, notify: Notify, name: str, role_name: str, challenge: bytes | None
    ) -> str:
        st = self._state
        parse_role(role_name, (Role.CO,))
        part = st.partition(name)
        _, so_key = st.partition_role_key(name, Role.PARTITION_SO)
        if st.store.get_role(name, Role.CO.value) is None:
            raise NotInitialised(f"partition {name!r} has no Crypto Officer to reset")
        if part.escrow is None:
            raise PolicyError(
                "the partition SO cannot reset the Crypto Officer: HSM policy 15 (SO can reset "
                "partition PIN) was off when the CO was created; re-initialise the partition"
            )
        ekek = derive_kek(so_key, st.aad(name, "so", "escrow"))
        try:
            data_key = unwrap(ekek, part.escrow, st.aad(name, "co", "escrow"))
        finally:
            wipe(ekek)
        chal, generated = new_challenge(challenge)
        try:
            async with st.ped_session(notify) as port:
                got = await imprint(port, Role.CO, f"Crypto Officer {name}")
                done = "black key reused" if got.reused else "new black key imprinted"
                if generated:
                    await port.show(f"Crypto Officer challenge secret: {chal.decode()}")
            try:
                wrapped, wrapped_chal = wrap_role(st, name, Role.CO, got, data_key, chal)
            finally:
                got.wipe()
            with st.store.tx():
                st.store.put_role(name, Role.CO.value, got.keyset_id, wrapped, wrapped_chal)
                if st.store.get_role(name, Role.CU.value) is not None:
                    st.store.update_role(name, Role.CU.value, locked="", failures=0)
                st.store.delete_activation(name, Role.CO.value)
        finally:
            wipe(data_key)
        # The old CO's cached secret opens nothing any more: wipe it, as every drop does.
        st.ram.drop_activation(name, Role.CO.value)
        st.event("role reset", partition=name, role="co")
        return (
            f"Crypto Officer of partition {name!r} reset: {done}, CO and CU "
            "unlocked."
        )

    async def changepw(
        self,
        notify: Notify,
        name: str,
        role_name: str,
        challenge: bytes | None,
        *,
        challenge_only: bool = False,
        secret_only: bool = False,
    ) -> str:
        """A new PED secret and/or challenge for the CO or CU (`role changepw`), or a new
        PED secret for the partition SO (`partition changepw`): see `hsm.changepw`.

        Who: the role itself or the partition SO, logged in on the shell; either way the
        role's current PED key is read first (the proof, counted as a login)."""
        st = self._state
        role = parse_role(role_name, (Role.PARTITION_SO, Role.CO, Role.CU))
        st.partition(name)
        change = change_of(role, challenge_only, secret_only)
        if role is Role.PARTITION_SO and challenge is not None:
            raise InvalidCommand("the partition SO has no challenge secret; omit --challenge-file")
        st.role_row(name, role)  # not initialised: said before anyone is asked to log in
        allowed = (role,) if role is Role.PARTITION_SO else (role, Role.PARTITION_SO)
        by, _ = st.partition_role_key(name, *allowed)
        new_chal = new_challenge(challenge) if change.challenge else None
        return await change_secret(
            st, self._logins, notify, name, role, change, by=by, new_chal=new_chal,
            current_chal=None if change.challenge else challenge,
        )
