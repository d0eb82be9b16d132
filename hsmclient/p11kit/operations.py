"""The PKCS#11 state an RPC server keeps per application: sessions, operations, searches.

p11-kit forwards every call as it comes (C_SignInit, C_SignUpdate..., C_SignFinal); the
`ped.pkcs11.token.Application` behind it takes whole operations.  So an operation is
opened by its C_*Init, gathers the input of its updates (bounded), and is run once, by
its C_Sign or C_*Final.  PKCS#11's length query (a NULL output buffer, or one too small)
leaves the operation active: the result is kept and handed over on the call that has
room for it.  A search keeps the handles C_FindObjectsInit found and hands them out in
the slices C_FindObjects asks for.  Calls out of order get the return values PKCS#11
gives: CKR_OPERATION_NOT_INITIALIZED, CKR_OPERATION_ACTIVE.
"""

from __future__ import annotations

import enum

import attrs

from ped.pkcs11.constants import CKR
from ped.pkcs11.token import Mechanism, Pkcs11Error

#: The most input one multi-part operation may gather.
MAX_GATHERED = 16 * 1024 * 1024


class OpKind(enum.Enum):
    """The operations that run once over gathered input."""

    SIGN = "sign"
    VERIFY = "verify"
    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"


@attrs.define
class Operation:
    """One active operation of a session."""

    kind: OpKind
    mechanism: Mechanism
    key: int
    gathered: bytearray = attrs.field(factory=bytearray, repr=False)
    multipart: bool = False  # an update came: only the matching C_*Final may end it
    result: bytes | None = attrs.field(default=None, repr=False)  # kept by a length query
    result_input: bytes | None = attrs.field(default=None, repr=False)


@attrs.define
class SessionState:
    """What the server keeps for one open session of this application."""

    slot_id: int
    operations: dict[OpKind, Operation] = attrs.field(factory=dict)
    found: list[int] | None = None  # an active search's remaining handles


@attrs.frozen
class Delivery:
    """What to answer for an output: the bytes, or (bytes None) only their length."""

    data: bytes | None
    length: int
    done: bool  # the operation ended


class ApplicationState:
    """The sessions this application opened through its connection, and their operations."""

    def __init__(self) -> None:
        self.sessions: dict[int, SessionState] = {}

    def opened(self, session: int, slot_id: int) -> None:
        self.sessions[session] = SessionState(slot_id)

    def closed(self, session: int) -> None:
        self.sessions.pop(session, None)

    def closed_slot(self, slot_id: int) -> None:
        for handle in [h for h, s in self.sessions.items() if s.slot_id == slot_id]:
            del self.sessions[handle]

    def session(self, session: int) -> SessionState:
        state = self.sessions.get(session)
        if state is None:
            raise Pkcs11Error(
                CKR.SESSION_HANDLE_INVALID,
                f"session {session} is not open in this application; C_OpenSession first",
            )
        return state

    def begin(self, session: int, kind: OpKind, mechanism: Mechanism | None, key: int) -> None:
        """A C_*Init: start an operation, or (mechanism None) cancel the active one."""
        state = self.session(session)
        if mechanism is None:
            state.operations.pop(kind, None)
            return
        if kind in state.operations:
            raise Pkcs11Error(
                CKR.OPERATION_ACTIVE,
                f"a {kind.value} operation is already active in session {session}; "
                f"finish it first",
            )
        state.operations[kind] = Operation(kind, mechanism, key)

    def active(self, session: int, kind: OpKind) -> Operation:
        operation = self.session(session).operations.get(kind)
        if operation is None:
            raise Pkcs11Error(
                CKR.OPERATION_NOT_INITIALIZED,
                f"no {kind.value} operation in session {session}; call C_{kind.name.title()}Init"
                f" first",
            )
        return operation

    def single_part(self, session: int, kind: OpKind) -> Operation:
        """The operation a one-shot call (C_Sign...) ends; refused once updates began."""
        operation = self.active(session, kind)
        if operation.multipart:
            raise Pkcs11Error(
                CKR.OPERATION_ACTIVE,
                f"the {kind.value} operation in session {session} is multi-part; end it with"
                f" C_{kind.name.title()}Final",
            )
        return operation

    def update(self, session: int, kind: OpKind, data: bytes) -> None:
        operation = self.active(session, kind)
        if len(operation.gathered) + len(data) > MAX_GATHERED:
            self.finish(session, kind)
            raise Pkcs11Error(
                CKR.DATA_LEN_RANGE,
                f"a multi-part {kind.value} may gather at most {MAX_GATHERED} bytes",
            )
        operation.multipart = True
        operation.gathered += data

    def finish(self, session: int, kind: OpKind) -> None:
        state = self.sessions.get(session)
        if state is not None:
            operation = state.operations.pop(kind, None)
            if operation is not None:
                operation.gathered[:] = bytes(len(operation.gathered))

    def deliver(
        self, session: int, operation: Operation, result: bytes, room: int | None, for_input: bytes
    ) -> Delivery:
        """Hand `result` over if the caller has room; else keep it and say its length."""
        if room is None or room < len(result):
            operation.result = result
            operation.result_input = for_input
            return Delivery(None, len(result), done=False)
        self.finish(session, operation.kind)
        return Delivery(result, len(result), done=True)

    def begin_search(self, session: int, handles: list[int]) -> None:
        state = self.session(session)
        if state.found is not None:
            raise Pkcs11Error(
                CKR.OPERATION_ACTIVE,
                f"a search is already active in session {session}; C_FindObjectsFinal first",
            )
        state.found = handles

    def search(self, session: int) -> list[int]:
        state = self.session(session)
        if state.found is None:
            raise Pkcs11Error(
                CKR.OPERATION_NOT_INITIALIZED,
                f"no search in session {session}; call C_FindObjectsInit first",
            )
        return state.found

    def end_search(self, session: int) -> None:
        self.search(session)
        self.session(session).found = None
