"""`ClientAccess`: pedhsm's `PartitionAccess` for one registered client's connection.

Theory of operation
-------------------
The client listener makes one `ClientAccess` per TLS connection (`Hsm.client_access`),
for the client its certificate names.  The client sees only the partitions assigned to
it (read afresh at every call, so a revocation applies at once).  Sessions and logins
belong to the connection: a login opens the partition's data key for every session of
that partition on this connection, and closing the connection wipes it (a logout, never
a counted failure).

Logins (CKU_USER is the partition's Crypto Officer, CKU_CRYPTO_USER its Crypto User) go
through `LoginService.login` with the challenge secret, so a wrong challenge is counted,
audited and locks out exactly as on the shell.  Every partition of this HSM is
PED-authenticated: it accepts the challenge only while the role is activated (policy 22,
23 across restarts), so a login of a role that is not activated is refused *before* the
login service runs: the PED is never asked and nothing is counted.  The refusal is
CKR_USER_PIN_NOT_INITIALIZED: the application's PIN is not usable yet and only the HSM
side can fix that (`role activate`); CKR_PIN_EXPIRED would send applications to
C_SetPIN, which cannot help.

Not counted: a partition not assigned (CKR_TOKEN_NOT_PRESENT), an unknown serial
(CKR_SLOT_ID_INVALID), a role not activated, a locked role (CKR_PIN_LOCKED), a challenge
of impossible length (CKR_PIN_LEN_RANGE).  Counted: a wrong challenge (CKR_PIN_INCORRECT;
CKR_PIN_LOCKED on the attempt that locks).  Each refusal is one log line on pedhsm
naming the client, what was refused and the fix.

The calls do not await anything but the login service, and the login service awaits
nothing for an activated role (the PED secret comes from the activation cache), so each
call runs as one step of the daemon's event loop, like a shell command under its lock.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

import attrs

from hsm.cloning import CloningCommands, ConnectionClones
from hsm.crypto import wipe
from hsm.errors import InvalidCommand, LockedOut, LoginFailed, NotInitialised, Zeroized
from hsm.logins import LoginService
from hsm.policy import Role
from hsm.roles import MAX_CHALLENGE
from hsm.state import HsmState
from hsm.store import PartitionRow
from hsm.token import mechanisms
from hsm.token import operations as ops
from hsm.token import template as tpl
from hsm.token.vault import SessionObjects, Vault
from ped.pkcs11.constants import CKF_TOKEN, CKR, CKU
from ped.pkcs11.token import (
    CKS_RO_PUBLIC_SESSION,
    CKS_RO_USER_FUNCTIONS,
    CKS_RW_PUBLIC_SESSION,
    CKS_RW_USER_FUNCTIONS,
    Attribute,
    AttributeResult,
    Mechanism,
    MechanismInfo,
    PartitionInfo,
    Pkcs11Error,
    TokenInfo,
)

log = logging.getLogger("pedhsm.clients")

MAX_SESSIONS = 1024
MAX_RANDOM = 64 * 1024
_ROLES: dict[int, Role] = {CKU.USER: Role.CO, CKU.CRYPTO_USER: Role.CU}
_WORD = {Role.CO: "co", Role.CU: "cu"}


@attrs.define
class _Session:
    partition: str
    serial: str
    read_write: bool


class ClientAccess:
    """One registered client's connection: its partitions, sessions and logins."""

    def __init__(self, state: HsmState, logins: LoginService, client: str,
                 cloning: CloningCommands | None = None) -> None:  # fmt: skip
        self._state = state
        self._logins = logins
        self.client = client
        self._sessions: dict[int, _Session] = {}
        #: partition name -> (the role logged in, the partition's data key)
        self._logged: dict[str, tuple[Role, bytearray]] = {}
        self._objects = SessionObjects()
        #: Clones open on this connection (`hsm.cloning`); None: this HSM does not clone.
        self.clones = ConnectionClones(cloning, self._co_scope) if cloning else None

    def __repr__(self) -> str:
        return f"ClientAccess(client={self.client!r}, sessions={len(self._sessions)})"

    # ------------------------------------------------------------------ refusals

    def _refuse(self, rv: int, what: str, fix: str, *, counted: bool = False) -> Pkcs11Error:
        """The error for the application, and pedhsm's one log line: who, what, the fix."""
        tally = "counted" if counted else "not counted"
        log.warning("client %s: %s (%s); fix: %s", self.client, what, tally, fix)
        return Pkcs11Error(rv, f"{what}; {fix}")

    # ------------------------------------------------------------------ partitions

    def _assigned(self) -> list[PartitionRow]:
        st = self._state
        rows = (st.store.get_partition(n) for n in st.store.assigned_partitions(self.client))
        return [p for p in rows if p is not None]

    def _by_serial(self, serial: str) -> PartitionRow:
        for part in self._assigned():
            if part.serial == serial:
                return part
        if any(p.serial == serial for p in self._state.store.partitions()):
            raise self._refuse(
                CKR.TOKEN_NOT_PRESENT,
                f"partition serial {serial} is not assigned to this client",
                f"on the HSM: `client assignpartition --client {self.client} --partition NAME`",
            )
        raise self._refuse(
            CKR.SLOT_ID_INVALID,
            f"no partition with serial {serial} on HSM {self._state.serial}",
            "list this client's partitions again (`hsmclient slot list`)",
        )

    def _activated(self, name: str, role: Role) -> bool:
        return (name, role.value) in self._state.ram.activation

    def partitions(self) -> Sequence[PartitionInfo]:
        # A role stays activated across restarts when its secret is sealed in the store:
        # only done with policy 23 on at activation, dropped when 23 is turned off.
        sealed = {(part, role) for part, role, _, _ in self._state.store.activations()}
        out = []
        for p in self._assigned():
            active = [r for r in (Role.CO, Role.CU) if self._activated(p.name, r)]
            auto = any((p.name, r.value) in sealed for r in active)
            out.append(PartitionInfo(p.serial, p.name, p.initialised, bool(active),
                                     auto_activation=auto))  # fmt: skip
        return out

    async def token_info(self, serial: str) -> TokenInfo:
        part = self._by_serial(serial)
        flags = CKF_TOKEN.RNG | CKF_TOKEN.LOGIN_REQUIRED
        if part.initialised:
            flags |= CKF_TOKEN.TOKEN_INITIALIZED
        co = self._state.store.get_role(part.name, Role.CO.value)
        if co is not None and self._activated(part.name, Role.CO):
            flags |= CKF_TOKEN.USER_PIN_INITIALIZED
        if co is not None:
            left = self._state.threshold(part.name, Role.CO) - co.failures
            if co.locked:
                flags |= CKF_TOKEN.USER_PIN_LOCKED
            elif left == 1:
                flags |= CKF_TOKEN.USER_PIN_FINAL_TRY
            elif co.failures:
                flags |= CKF_TOKEN.USER_PIN_COUNT_LOW
        return TokenInfo(label=part.name, serial=part.serial, flags=int(flags))

    async def mechanisms(self, serial: str) -> Sequence[MechanismInfo]:
        self._by_serial(serial)
        return mechanisms.MECHANISMS

    # ------------------------------------------------------------------ sessions

    async def open_session(self, serial: str, read_write: bool) -> int:
        part = self._by_serial(serial)
        if len(self._sessions) >= MAX_SESSIONS:
            raise self._refuse(
                CKR.SESSION_COUNT,
                f"{MAX_SESSIONS} sessions are open on this connection",
                "close sessions the application no longer uses",
            )
        if any(x.partition == part.name and x.serial != part.serial
               for x in self._sessions.values()):  # fmt: skip
            self._forget(part.name)  # a partition re-created under that name: a new login
        while True:
            handle = secrets.randbelow(0x7FFF_FFFF) + 1
            if handle not in self._sessions:
                break
        self._sessions[handle] = _Session(part.name, part.serial, read_write)
        return handle

    def session_state(self, session: int) -> int:
        """The CKS_* state of a session (C_GetSessionInfo on hsmclient's side)."""
        s = self._session(session)
        if s.partition in self._logged:
            return CKS_RW_USER_FUNCTIONS if s.read_write else CKS_RO_USER_FUNCTIONS
        return CKS_RW_PUBLIC_SESSION if s.read_write else CKS_RO_PUBLIC_SESSION

    def _session(self, session: int) -> _Session:
        s = self._sessions.get(session)
        if s is None:
            raise Pkcs11Error(
                CKR.SESSION_HANDLE_INVALID,
                f"no session {session} on this connection (closed, or never opened)",
            )
        part = self._state.store.get_partition(s.partition)
        assigned = s.partition in self._state.store.assigned_partitions(self.client)
        if part is None or part.serial != s.serial or not assigned:
            self._forget(s.partition)
            raise self._refuse(
                CKR.TOKEN_NOT_PRESENT,
                f"partition {s.partition!r} (serial {s.serial}) is no longer available to "
                "this client (revoked, deleted or re-created)",
                "ask the HSM administrator (`client show --name "
                f"{self.client}` lists its partitions)",
            )
        return s

    async def close_session(self, session: int) -> None:
        s = self._session(session)
        del self._sessions[session]
        if self.clones is not None:
            self.clones.discard(session)
        if not any(o.partition == s.partition for o in self._sessions.values()):
            self._forget(s.partition)  # PKCS#11: the last session closed logs out

    def _forget(self, partition: str) -> None:
        logged = self._logged.pop(partition, None)
        if logged is not None:
            wipe(logged[1])
            self._state.event("logout", partition=partition, role=logged[0].value,
                              client=self.client)  # fmt: skip
        for handle in [h for h, s in self._sessions.items() if s.partition == partition]:
            del self._sessions[handle]
        self._objects.rows = {h: r for h, r in self._objects.rows.items() if r[0] != partition}

    async def close(self) -> None:
        if self.clones is not None:
            self.clones.close()
        for partition in {s.partition for s in self._sessions.values()} | set(self._logged):
            self._forget(partition)
        self._objects.rows.clear()

    # ------------------------------------------------------------------ login

    async def login(self, session: int, user_type: int, pin: bytearray) -> None:
        try:
            await self._login(session, user_type, pin)
        finally:
            wipe(pin)

    async def _login(self, session: int, user_type: int, pin: bytearray) -> None:
        s = self._session(session)
        name = s.partition
        role = _ROLES.get(user_type)
        if role is None:
            raise self._refuse(
                CKR.USER_TYPE_INVALID,
                f"login to partition {name!r} as user type {user_type:#x} refused",
                "log in as CKU_USER (Crypto Officer) or the Crypto User; the partition SO "
                "works on the HSM shell",
            )
        if name in self._logged:
            if self._logged[name][0] is role:
                raise Pkcs11Error(
                    CKR.USER_ALREADY_LOGGED_IN, f"the {role.title} is already logged in"
                )
            raise Pkcs11Error(
                CKR.USER_ANOTHER_ALREADY_LOGGED_IN,
                f"the {self._logged[name][0].title} is logged in; log out first",
            )
        what = f"login to partition {name!r} as {role.title}"
        row = self._state.store.get_role(name, role.value)
        if row is not None and row.locked:
            raise self._refuse(
                CKR.PIN_LOCKED,
                f"{what} refused: the role is locked after too many failed logins",
                self._unlock_fix(name),
            )
        if row is None or row.wrapped_chal is None:
            raise self._refuse(
                CKR.USER_PIN_NOT_INITIALIZED,
                f"{what} refused: the role is not initialised",
                f"on the HSM: `role init --partition {name} --name {_WORD[role]}`",
            )
        if not self._activated(name, role):
            raise self._refuse(
                CKR.USER_PIN_NOT_INITIALIZED,
                f"{what} refused: the role is not activated, so the challenge secret is "
                "not accepted",
                f"activate with `role activate --partition {name} --name {_WORD[role]}` on "
                "the HSM (partition policy 22 on)",
            )
        if not 1 <= len(pin) <= MAX_CHALLENGE:
            raise self._refuse(
                CKR.PIN_LEN_RANGE,
                f"{what} refused: a challenge secret has 1-{MAX_CHALLENGE} bytes",
                "present the challenge secret set with `role init` on the HSM",
            )
        cautions: list[str] = []
        try:
            key, _ = await self._logins.login(name, role, cautions.append, challenge=pin,
                                                client=self.client)
        except LoginFailed as exc:
            raise self._refuse(
                CKR.PIN_INCORRECT, f"partition {name!r}: {exc.message}",
                "present the challenge secret of this role", counted=True,
            ) from None  # fmt: skip
        except LockedOut as exc:
            raise self._refuse(
                CKR.PIN_LOCKED, f"partition {name!r}: {exc.message}",
                self._unlock_fix(name), counted=True,
            ) from None  # fmt: skip
        except (InvalidCommand, NotInitialised, Zeroized) as exc:
            raise self._refuse(CKR.USER_PIN_NOT_INITIALIZED, f"{what} refused: {exc.message}",
                               "see the HSM's message") from None  # fmt: skip
        for caution in cautions:
            log.warning("client %s: %s", self.client, caution)
        self._logged[name] = (role, key)

    def _unlock_fix(self, name: str) -> str:
        row = self._state.store.get_role(name, Role.CO.value)
        if row is not None and row.locked == "reset":
            return f"the partition SO runs `role resetpw --partition {name} --name co` on the HSM"
        return f"re-initialise partition {name} on the HSM and restore it from a backup"

    async def logout(self, session: int) -> None:
        s = self._session(session)
        logged = self._logged.pop(s.partition, None)
        if logged is None:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN, "no user is logged in to this partition")
        wipe(logged[1])
        self._state.event("logout", partition=s.partition, role=logged[0].value,
                          client=self.client)  # fmt: skip
        # PKCS#11: the private session objects of the partition go with the login.
        rows = self._objects.rows
        self._objects.rows = {
            h: r for h, r in rows.items()
            if r[0] != s.partition or not ops.is_private(tpl.decode(r[1]))
        }  # fmt: skip

    # ------------------------------------------------------------------ objects, crypto

    def _scope(self, session: int) -> ops.Scope:
        s = self._session(session)
        logged = self._logged.get(s.partition)
        if logged is not None:
            row = self._state.store.get_role(s.partition, logged[0].value)
            why = None
            if row is None or row.locked:
                why = "locked or re-initialised on the HSM"
            elif not self._activated(s.partition, logged[0]):
                # Deactivating a role (or turning policy 22 off) stops its applications at
                # once: that is the administrator's way to cut off a stolen client.
                why = "deactivated on the HSM (`role activate` there to let it log in again)"
            if why is not None:
                wipe(self._logged.pop(s.partition)[1])
                log.warning("client %s: login to partition %r as %s ended: the role was %s",
                            self.client, s.partition, logged[0].title, why)  # fmt: skip
                logged = None
        return ops.Scope(
            self._state, self.client, s.partition, s.read_write,
            Vault(self._state, s.partition, self._objects),
            logged[1] if logged is not None else None,
        )  # fmt: skip

    def _co_scope(self, session: int) -> ops.Scope:
        """A clone's scope: only the partition's Crypto Officer moves objects between HSMs."""
        scope = self._scope(session)
        logged = self._logged.get(scope.partition)
        if logged is None or logged[0] is not Role.CO:
            raise Pkcs11Error(CKR.USER_NOT_LOGGED_IN,
                              f"cloning partition {scope.partition!r} needs its Crypto Officer "
                              "logged in on this session (C_Login as CKU_USER)")  # fmt: skip
        return scope

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        return ops.generate_key(self._scope(session), mechanism, template)

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        return ops.generate_key_pair(
            self._scope(session), mechanism, public_template, private_template
        )

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        return ops.find_objects(self._scope(session), template)

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        return ops.get_attributes(self._scope(session), handle, types)

    async def destroy_object(self, session: int, handle: int) -> None:
        ops.destroy_object(self._scope(session), handle)

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        return ops.sign(self._scope(session), mechanism, key, data)

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        ops.verify(self._scope(session), mechanism, key, data, signature)

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        return ops.encrypt(self._scope(session), mechanism, key, data)

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        return ops.decrypt(self._scope(session), mechanism, key, data)

    async def generate_random(self, session: int, length: int) -> bytes:
        self._session(session)
        if not 0 <= length <= MAX_RANDOM:
            raise Pkcs11Error(
                CKR.ARGUMENTS_BAD, f"ask for 0-{MAX_RANDOM} random bytes at a time"
            )
        return secrets.token_bytes(length)

