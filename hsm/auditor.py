"""The auditor's commands: init, login, logout, read and verify the audit log."""

from __future__ import annotations

from typing import Any

from hsm.crypto import random_key, wipe
from hsm.enrol import imprint, wrap_role
from hsm.errors import NotLoggedIn
from hsm.logins import LoginService
from hsm.policy import Role
from hsm.state import HsmState, Notify, confirm
from hsm.store import HSM_SCOPE


class AuditorCommands:
    """``audit ...`` commands; the log itself is `hsm.audit.AuditLog` (``state.audit``)."""

    def __init__(self, state: HsmState, logins: LoginService) -> None:
        self._state = state
        self._logins = logins

    async def init(self, notify: Notify, force: bool) -> str:
        st = self._state
        st.require_initialised()
        if st.store.get_role(HSM_SCOPE, Role.AUDITOR.value) is not None:
            if not st.ram.auditor and st.ram.so_key is None:
                raise NotLoggedIn(
                    "the auditor is initialised: re-initialising it needs the auditor "
                    "(`audit login`) or the HSM SO (`hsm login`) logged in"
                )
            confirm(
                force, "the auditor is already initialised; re-initialising replaces its white key"
            )
        async with st.ped_session(notify) as port:
            white = await imprint(port, Role.AUDITOR, "Auditor")
        done = "reused" if white.reused else "imprinted"
        aud_key = random_key()
        try:
            wrapped, _ = wrap_role(st, HSM_SCOPE, Role.AUDITOR, white, aud_key)
            with st.store.tx():
                st.store.put_role(HSM_SCOPE, Role.AUDITOR.value, white.keyset_id, wrapped)
        finally:
            white.wipe()
            wipe(aud_key)
        st.event("auditor initialised")
        return f"Auditor initialised (white PED key {done}). Log in with `audit login`."

    async def login(self, notify: Notify) -> str:
        # No `require_initialised`: the auditor survives zeroization (see Store.zeroize).
        key, _ = await self._logins.login(HSM_SCOPE, Role.AUDITOR, notify)
        wipe(key)
        self._state.ram.auditor = True
        return "Auditor logged in."

    def logout(self) -> str:
        st = self._state
        was, st.ram.auditor = st.ram.auditor, False
        if was:
            st.event("logout", role=Role.AUDITOR.value)
        return "Auditor logged out." if was else "The auditor was not logged in."

    def show(self, tail: int | None) -> list[dict[str, Any]]:
        if not self._state.ram.auditor:
            raise NotLoggedIn("only the auditor may read the audit log: run `audit login`")
        records = self._state.audit.records()
        return records[-tail:] if tail else records

    def verify(self) -> dict[str, Any]:
        result = self._state.audit.verify()
        return {"ok": result.ok, "records": result.records, "problem": result.problem}
