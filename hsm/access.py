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
(CKR_SLOT_ID_INVALID), a role not activated, a locked role (CKR_PIN_LOCKED).  Counted: a
wrong challenge (CKR_PIN_INCORRECT; CKR_PIN_LOCKED on the attempt that locks).  Each
refusal is one log line on pedhsm naming the client, what was refused and the fix.

The calls do not await anything but the login service, and the login service awaits
nothing for an activated role (the PED secret comes from the activation cache), so each
call runs as one step of the daemon's event loop, like a shell command under its lock.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

import attrs

from hsm.crypto import wipe
from hsm.errors import InvalidCommand, LockedOut, LoginFailed, NotInitialised, Zeroized
from hsm.logins import LoginService
from hsm.policy import Role
from hsm.state import HsmState
from hsm.store import PartitionRow
from hsm.token import keygen, mechanisms
from hsm.token import template as tpl
from hsm.token.vault import SessionObjects, Vault
from ped.pkcs11.constants import CKA, CKF_TOKEN, CKO, CKR, CKU
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

    def __init__(self, state: HsmState, logins: LoginService, client: str) -> None:
        self._state = state
        self._logins = logins
        self.client = client
        self._sessions: dict[int, _Session] = {}
        #: partition name -> (the role logged in, the partition's data key)
        self._logged: dict[str, tuple[Role, bytearray]] = {}
        self._objects = SessionObjects()

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
        return [
            PartitionInfo(p.serial, p.name, p.initialised,
                          self._activated(p.name, Role.CO) or self._activated(p.name, Role.CU))
            for p in self._assigned()
        ]  # fmt: skip

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
        cautions: list[str] = []
        try:
            key, _ = await self._logins.login(name, role, cautions.append, challenge=pin)
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
        self._objects.rows = {h: r for h, r in self._objects.rows.items()
                              if r[0] != s.partition or not _private(r[1])}  # fmt: skip

    # ------------------------------------------------------------------ objects

    def _vault(self, s: _Session) -> Vault:
        return Vault(self._state, s.partition, self._objects)

    def _data_key(self, s: _Session) -> bytearray:
        logged = self._logged.get(s.partition)
        if logged is None:
            raise Pkcs11Error(
                CKR.USER_NOT_LOGGED_IN,
                f"this needs a login to partition {s.partition!r} (C_Login with the "
                "challenge secret)",
            )
        return logged[1]

    def _writable(self, s: _Session, attrs_: tpl.Attrs) -> None:
        if attrs_.get(CKA.TOKEN) is True and not s.read_write:
            raise Pkcs11Error(
                CKR.SESSION_READ_ONLY, "a token object needs a read/write session (CKF_RW_SESSION)"
            )

    async def generate_key(
        self, session: int, mechanism: Mechanism, template: Sequence[Attribute]
    ) -> int:
        s = self._session(session)
        data_key = self._data_key(s)
        new = keygen.generate_secret(mechanism.mechanism, tpl.check_template(template))
        try:
            self._writable(s, new.attributes)
            handle = self._vault(s).create(new.attributes, new.value, data_key)
        finally:
            wipe(new.value)
        self._state.event("key generated", partition=s.partition, client=self.client,
                          label=tpl.label_of(new.attributes))  # fmt: skip
        return handle

    async def generate_key_pair(
        self,
        session: int,
        mechanism: Mechanism,
        public_template: Sequence[Attribute],
        private_template: Sequence[Attribute],
    ) -> tuple[int, int]:
        s = self._session(session)
        data_key = self._data_key(s)
        public, private = keygen.generate_pair(
            mechanism.mechanism, tpl.check_template(public_template),
            tpl.check_template(private_template),
        )  # fmt: skip
        try:
            self._writable(s, public)
            self._writable(s, private.attributes)
            vault = self._vault(s)
            pub = vault.create(public, b"", data_key)
            priv = vault.create(private.attributes, private.value, data_key)
        finally:
            wipe(private.value)
        self._state.event("key pair generated", partition=s.partition, client=self.client,
                          label=tpl.label_of(private.attributes))  # fmt: skip
        return pub, priv

    async def find_objects(self, session: int, template: Sequence[Attribute]) -> Sequence[int]:
        s = self._session(session)
        wanted = tpl.check_template(template, searching=True)
        return self._vault(s).find(wanted, private_too=s.partition in self._logged)

    def _visible(self, s: _Session, handle: int) -> tpl.Attrs:
        attrs_ = self._vault(s).attributes(handle)
        if _private(attrs_) and s.partition not in self._logged:
            raise Pkcs11Error(
                CKR.OBJECT_HANDLE_INVALID,
                f"object {handle} is private: log in to partition {s.partition!r} first",
            )
        return attrs_

    async def get_attributes(
        self, session: int, handle: int, types: Sequence[int]
    ) -> Sequence[AttributeResult]:
        s = self._session(session)
        if len(types) > tpl.MAX_TEMPLATE:
            raise Pkcs11Error(CKR.ARGUMENTS_BAD, f"ask for at most {tpl.MAX_TEMPLATE} attributes")
        return tpl.read(self._visible(s, handle), types)

    async def destroy_object(self, session: int, handle: int) -> None:
        s = self._session(session)
        attrs_ = self._visible(s, handle)
        self._writable(s, attrs_)
        if attrs_.get(CKA.DESTROYABLE) is False:
            raise Pkcs11Error(CKR.ACTION_PROHIBITED, f"object {handle} is not destroyable")
        if attrs_.get(CKA.TOKEN) is True:
            self._data_key(s)  # destroying a token object needs the CO/CU
        self._vault(s).destroy(handle)
        self._state.event("object destroyed", partition=s.partition, client=self.client,
                          label=tpl.label_of(attrs_))  # fmt: skip

    # ------------------------------------------------------------------ crypto

    def _key(self, s: _Session, handle: int) -> tuple[tpl.Attrs, bytearray]:
        """A key's attributes and value (checked against its sealing; caller wipes)."""
        try:
            attrs_ = self._visible(s, handle)
        except Pkcs11Error as exc:
            if exc.rv == CKR.OBJECT_HANDLE_INVALID:
                raise Pkcs11Error(CKR.KEY_HANDLE_INVALID, str(exc)) from None
            raise
        if attrs_.get(CKA.CLASS) not in (CKO.PRIVATE_KEY, CKO.SECRET_KEY, CKO.PUBLIC_KEY):
            raise Pkcs11Error(CKR.KEY_HANDLE_INVALID, f"object {handle} is not a key")
        return attrs_, self._vault(s).key_value(handle, self._data_key(s))

    async def sign(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        s = self._session(session)
        attrs_, value = self._key(s, key)
        try:
            return mechanisms.sign(attrs_, value, mechanism, data)
        finally:
            wipe(value)

    async def verify(
        self, session: int, mechanism: Mechanism, key: int, data: bytes, signature: bytes
    ) -> None:
        s = self._session(session)
        attrs_ = self._visible(s, key)
        if attrs_.get(CKA.CLASS) == CKO.PUBLIC_KEY and s.partition not in self._logged:
            # A public key verifies without a login: its point is public.
            mechanisms.verify(attrs_, b"", mechanism, data, signature)
            return
        attrs_, value = self._key(s, key)
        try:
            mechanisms.verify(attrs_, value, mechanism, data, signature)
        finally:
            wipe(value)

    async def encrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        s = self._session(session)
        attrs_, value = self._key(s, key)
        try:
            return mechanisms.encrypt(attrs_, value, mechanism, data)
        finally:
            wipe(value)

    async def decrypt(self, session: int, mechanism: Mechanism, key: int, data: bytes) -> bytes:
        s = self._session(session)
        attrs_, value = self._key(s, key)
        try:
            return mechanisms.decrypt(attrs_, value, mechanism, data)
        finally:
            wipe(value)

    async def generate_random(self, session: int, length: int) -> bytes:
        self._session(session)
        if not 0 <= length <= MAX_RANDOM:
            raise Pkcs11Error(
                CKR.ARGUMENTS_BAD, f"ask for 0-{MAX_RANDOM} random bytes at a time"
            )
        return secrets.token_bytes(length)


def _private(attrs_or_text: tpl.Attrs | str) -> bool:
    attrs_ = tpl.decode(attrs_or_text) if isinstance(attrs_or_text, str) else attrs_or_text
    return attrs_.get(CKA.PRIVATE) is True
