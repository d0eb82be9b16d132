"""Enrolling a role: imprint its PED key and wrap its role key under the key's secret."""

from __future__ import annotations

from hsm.crypto import derive_kek, random_key, wipe, wrap
from hsm.pedport import PedPort, PedSecret
from hsm.policy import Role
from hsm.state import HsmState


async def imprint(
    port: PedPort, role: Role, label: str, secret: bytearray | None = None
) -> PedSecret:
    """Imprint key(s) of *role*'s colour with *secret* (a fresh random one if none)."""
    fresh = secret if secret is not None else random_key()
    try:
        return await port.imprint(role.color, label, fresh)
    finally:
        if secret is None:
            wipe(fresh)


def wrap_role(
    state: HsmState,
    scope: str,
    role: Role,
    got: PedSecret,
    key: bytearray,
    challenge: bytes | None = None,
) -> tuple[bytes, bytes | None]:
    """*key* wrapped for a PED login, and also for a challenge login if *challenge* is given
    (`hsm.logins` unwraps them with the same associated data)."""
    kek = derive_kek(got.secret, state.aad(scope, role.value, "ped"))
    wrapped = wrap(kek, key, state.aad(scope, role.value, "ped"))
    wipe(kek)
    wrapped_chal = None
    if challenge is not None:
        ckek = derive_kek(got.secret, state.aad(scope, role.value, "chal"), challenge)
        wrapped_chal = wrap(ckek, key, state.aad(scope, role.value, "chal"))
        wipe(ckek)
    return wrapped, wrapped_chal
