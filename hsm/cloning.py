"""Cloning objects between two HSMs' partitions: this HSM's end of a clone hsmclient relays.

Theory of operation
-------------------
hsmclient opens a clone on a session of each HSM (``CLONE_OPEN``, see
docs/protocol/client.md) and then relays cloning frames (``ped.cloning``,
docs/protocol/cloning.md) between them as opaque bytes (``CLONE_FRAME``): each call hands
one end what the other produced and returns this end's frames.  The channel is keyed by
the partitions' cloning domain, so hsmclient learns nothing of the objects.

The **source** (`CloneSource`) is a `CloneInitiator`: it checks the objects named when
the clone opens (token objects of its partition, visible to the logged-in Crypto
Officer), sends ``CLONE_INIT``, and once the target accepts sends every object and the
end marker in one answer; it reports the target's verdict.

The **target** (`CloneTarget`) is a `CloneResponder`: a domain that differs is refused at
the handshake (``CLONE_REFUSED`` with its fingerprint) before anything is created; the
objects are buffered by `ObjectReceiver` and stored only after the end marker checks
out, all in one transaction (`hsm.store.Store.tx`): every object, or none.

Both need the partition's Crypto Officer logged in on that connection (`hsm.access`
checks it before a clone opens).  Errors reach the application as `Pkcs11Error`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from hsm.crypto import wipe
from hsm.state import HsmState
from hsm.token import template as tpl
from hsm.token.operations import Scope, visible
from ped.cloning import (
    CloneDirection,
    ClonedObject,
    CloneInit,
    CloneInitiator,
    CloneRefuseReason,
    CloneResponder,
    CloneType,
    DomainMismatch,
    ObjectBatches,
    ObjectReceiver,
    ObjectSender,
    Outgoing,
    ResultStatus,
)
from ped.errors import PedError
from ped.ntls import messages as m
from ped.ntls.messages import ArchiveMode
from ped.ntls.values import MAX_OUTPUT
from ped.pkcs11.constants import CKA, CKR
from ped.pkcs11.token import Pkcs11Error
from ped.wire.framing import NEED_DATA, Frame, FrameDecoder, encode_frame

#: The frame types one end may receive from the other.
CLONE_TYPES = frozenset(int(t) for t in CloneType)


def _frames(data: bytes) -> list[Frame]:
    """The whole cloning frames in *data*; anything else is refused."""
    decoder = FrameDecoder(accepted=CLONE_TYPES, max_payload=MAX_OUTPUT)
    decoder.feed(data)
    out: list[Frame] = []
    while (frame := decoder.next_frame()) is not NEED_DATA:
        assert isinstance(frame, Frame)
        out.append(frame)
    if decoder.buffered:
        raise Pkcs11Error(CKR.DATA_INVALID, "the cloning frames end in an unfinished frame")
    return out


def _failed(exc: PedError) -> Pkcs11Error:
    return Pkcs11Error(CKR.FUNCTION_FAILED, f"clone refused: {exc}")


class SourceEnd:
    """This HSM sends objects: `start` gives CLONE_INIT, `feed` the answers to the target's.

    An empty `feed` (the target is still receiving) gives the next batch of objects.
    """

    def __init__(self, initiator: CloneInitiator, objects: Callable[[], Iterator[Outgoing]],
                 stored: Callable[[int], None]) -> None:  # fmt: skip
        self._initiator = initiator
        self._objects = objects
        self._stored = stored  # told how many objects the target stored
        self._batches: ObjectBatches | None = None
        self._sender: ObjectSender | None = None
        self.done = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(done={self.done})"

    def start(self) -> bytes:
        return encode_frame(self._initiator.start())

    async def feed(self, data: bytes) -> bytes:
        try:
            return self._feed(_frames(data))
        except Pkcs11Error:
            self.done = True
            raise
        except PedError as exc:  # the cloning core's or a malformed frame's
            self.done = True
            raise _failed(exc) from None

    def _feed(self, frames: list[Frame]) -> bytes:
        if not frames:
            if self._batches is None or self._batches.finished:
                raise Pkcs11Error(CKR.DATA_INVALID, "the source has nothing more to send")
            return self._batches.next_batch()
        if len(frames) != 1:
            raise Pkcs11Error(CKR.DATA_INVALID, "the source expects one cloning frame")
        if self._sender is None:
            self._sender = ObjectSender(self._initiator.receive(frames[0]))
            self._batches = ObjectBatches(self._sender, self._objects())
            return self._batches.next_batch()
        result = self._sender.receive_result(frames[0])
        self.done = True
        if result.status is not ResultStatus.STORED:
            raise Pkcs11Error(CKR.FUNCTION_FAILED, f"the target stored nothing: {result.detail}")
        self._stored(result.stored)
        return b""


def _initiator(domain: bytearray, serials: tuple[str, str]) -> CloneInitiator:
    try:
        return CloneInitiator(domain=domain, direction=CloneDirection.INITIATOR_SENDS,
                              source_serial=serials[0], target_serial=serials[1])  # fmt: skip
    finally:
        wipe(domain)


class CloneSource(SourceEnd):
    """A partition's objects (token objects the logged-in Crypto Officer sees) going out."""

    def __init__(
        self,
        scope: Scope,
        handles: Sequence[int],
        domain_of: Callable[[str], bytearray],
        serials: tuple[str, str],
    ) -> None:
        self._scope = scope
        self._handles = tuple(handles)
        for handle in self._handles:
            if visible(scope, handle).get(CKA.TOKEN) is not True:
                raise Pkcs11Error(CKR.KEY_UNEXTRACTABLE,
                                  f"object {handle} is a session object; only token objects "
                                  "are cloned")  # fmt: skip
        # The domain is unsealed only once the objects are checked.
        super().__init__(_initiator(domain_of(scope.partition), serials), self._outgoing,
                         lambda n: _event(scope, "objects cloned out", n))  # fmt: skip

    def __repr__(self) -> str:
        return f"CloneSource(objects={len(self._handles)}, done={self.done})"

    def _outgoing(self) -> Iterator[Outgoing]:
        vault, key = self._scope.vault, self._scope.key()
        for handle in self._handles:
            yield tpl.encode(vault.attributes(handle)).encode(), vault.key_value(handle, key)


class TargetEnd:
    """This HSM receives objects: `feed` CLONE_INIT, then the objects and the end marker.

    A domain that differs is refused at the handshake, before anything is created; the
    objects are buffered and `store` runs once, after the end marker checks out.
    """

    def __init__(self, serials: tuple[str, str]) -> None:
        self._serials = serials
        self._responder = CloneResponder()
        self._receiver: ObjectReceiver | None = None
        self.done = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(done={self.done})"

    async def domain(self, init: CloneInit) -> bytearray | None:
        """This end's domain for *init* (None: refused, `refusal` says why)."""
        raise NotImplementedError

    def store(self, objects: Sequence[ClonedObject]) -> int:
        """Store every object in one transaction, or raise; how many were stored."""
        raise NotImplementedError

    def refusal(self) -> Frame | None:
        return None

    async def feed(self, data: bytes) -> bytes:
        try:
            return b"".join(encode_frame(f) for f in await self._feed(_frames(data)))
        except Pkcs11Error:
            self.done = True
            raise
        except PedError as exc:  # the cloning core's or a malformed frame's
            self.done = True
            raise _failed(exc) from None

    async def _feed(self, frames: list[Frame]) -> list[Frame]:
        if self._receiver is None:
            if len(frames) != 1:
                raise Pkcs11Error(CKR.DATA_INVALID, "a clone starts with one CLONE_INIT")
            init = self._responder.receive_init(frames[0])
            if (init.source_serial, init.target_serial) != self._serials:
                self.done = True
                return [self._responder.refuse(CloneRefuseReason.NO_PARTITION,
                                               "the clone names other partitions")]  # fmt: skip
            domain = await self.domain(init)
            if domain is None:
                self.done = True
                refusal = self.refusal()
                assert refusal is not None
                return [refusal]
            try:
                accept, channel = self._responder.accept(domain)
            except DomainMismatch:
                self.done = True  # nothing created: the domain is checked first
                return [self._responder.refuse(CloneRefuseReason.DOMAIN_MISMATCH)]
            finally:
                wipe(domain)
            self._receiver = ObjectReceiver(channel)
            return [accept]
        for frame in frames:
            complete = self._receiver.receive(frame)
            if complete is not None:
                self.done = True
                try:
                    stored = self.store(complete.objects)
                except (Pkcs11Error, ValueError) as exc:  # CloneResult clips it to the wire's 256
                    return [self._receiver.reject(f"nothing stored: {exc}")]
                return [self._receiver.accept_all(stored)]
        return []


class CloneTarget(TargetEnd):
    """A partition receiving objects; with `ArchiveMode.REPLACE` its old objects go in the
    same transaction, with `ArchiveMode.ADD` an object it holds already is not added twice."""

    def __init__(self, scope: Scope, domain_of: Callable[[str], bytearray],
                 serials: tuple[str, str], mode: ArchiveMode = ArchiveMode.NEW
                 ) -> None:  # fmt: skip
        super().__init__(serials)
        self._scope = scope
        self._domain_of = domain_of
        self._mode = mode

    async def domain(self, init: CloneInit) -> bytearray | None:
        return self._domain_of(self._scope.partition)

    def store(self, objects: Sequence[ClonedObject]) -> int:
        scope = self._scope
        key = scope.key()
        store = scope.state.store
        stored = 0
        with store.tx():  # every object, or none
            held = {text for _h, text in store.token_objects(scope.partition)}
            if self._mode is ArchiveMode.REPLACE:
                for handle, _text in store.token_objects(scope.partition):
                    store.delete_token_object(scope.partition, handle)
                held = set()
            for obj in objects:
                attributes = tpl.decode(obj.attributes.decode())
                if attributes.get(CKA.TOKEN) is not True:
                    raise Pkcs11Error(CKR.TEMPLATE_INCONSISTENT, "not a token object")
                if self._mode is ArchiveMode.ADD and tpl.encode(attributes) in held:
                    continue  # restored before: kept, not doubled
                scope.vault.create(attributes, obj.value, key)
                stored += 1
        _event(scope, "objects cloned in", stored)
        return stored


def _event(scope: Scope, event: str, count: int) -> None:
    scope.state.event(event, partition=scope.partition, client=scope.client, count=count)


class CloningCommands:
    """Opens this HSM's end of a clone for a client session (`hsm.access` calls it)."""

    def __init__(self, state: HsmState, domain_of: Callable[[str], bytearray]) -> None:
        self._state = state
        self._domain_of = domain_of

    def _serial(self, name: str) -> str:
        part = self._state.store.get_partition(name)
        assert part is not None
        return part.serial

    def source(self, scope: Scope, handles: Sequence[int], target_serial: str) -> CloneSource:
        serials = (self._serial(scope.partition), target_serial)
        return CloneSource(scope, handles, self._domain_of, serials)

    def target(self, scope: Scope, source_serial: str,
               mode: ArchiveMode = ArchiveMode.NEW) -> CloneTarget:  # fmt: skip
        serials = (source_serial, self._serial(scope.partition))
        return CloneTarget(scope, self._domain_of, serials, mode)

    def every_object(self, scope: Scope, labels: Sequence[str]) -> list[int]:
        """The token objects a backup takes: every one the CO sees, or those of *labels*."""
        wanted: list[tpl.Attrs] = [{int(CKA.TOKEN): True}]
        if labels:
            wanted = [{int(CKA.TOKEN): True, int(CKA.LABEL): label.encode()} for label in labels]
        handles: list[int] = []
        for template in wanted:
            found = scope.vault.find(template, private_too=True)
            if labels and not found:
                raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID,
                                  f"no object labelled {template[int(CKA.LABEL)]!r} in "
                                  f"partition {scope.partition!r}")  # fmt: skip
            handles.extend(h for h in found if h not in handles)
        return handles


#: One end of a clone open on a session.
CloneEnd = SourceEnd | TargetEnd


class ConnectionClones:
    """The clones open on one client connection: at most one per session."""

    def __init__(self, cloning: CloningCommands, co_scope: Callable[[int], Scope]) -> None:
        self._cloning = cloning
        self._co_scope = co_scope  # the session's scope; refuses unless the CO is logged in
        self._open: dict[int, CloneEnd] = {}

    def __repr__(self) -> str:
        return f"ConnectionClones(open={len(self._open)})"

    def open(self, session: int, *, source: bool, peer_serial: str,
             handles: Sequence[int]) -> bytes:  # fmt: skip
        """Open this end on *session*; the source's CLONE_INIT (the target's: nothing)."""
        scope = self._co_scope(session)
        self._open.pop(session, None)
        clone: CloneEnd
        if source:
            clone = self._cloning.source(scope, handles, peer_serial)
            out = clone.start()
        else:
            if handles:
                raise Pkcs11Error(CKR.ARGUMENTS_BAD, "the target of a clone names no objects")
            clone, out = self._cloning.target(scope, peer_serial), b""
        self._open[session] = clone
        return out

    async def archive(self, r: m.Archive) -> bytes:
        """A partition's end of a backup (its objects out) or of a restore (objects in)."""
        if r.action not in (m.ArchiveAction.BACKUP_SOURCE, m.ArchiveAction.RESTORE_TARGET):
            raise Pkcs11Error(CKR.FUNCTION_NOT_SUPPORTED,
                              f"{r.action.name.lower().replace('_', ' ')} is a Backup HSM's "
                              "end: this slot is a partition's, not a Backup HSM's admin "
                              "slot (`pedhsm mode start --backup`)")  # fmt: skip
        scope = self._co_scope(r.session)
        self._open.pop(r.session, None)
        if r.action is m.ArchiveAction.BACKUP_SOURCE:
            handles = self._cloning.every_object(scope, r.labels)
            source = self._cloning.source(scope, handles, r.peer_serial)
            self._open[r.session] = source
            return source.start()
        self._open[r.session] = self._cloning.target(scope, r.peer_serial, r.mode)
        return b""

    def add(self, session: int, clone: CloneEnd) -> None:
        self._open[session] = clone

    async def feed(self, session: int, frames: bytes) -> bytes:
        """Frames from the other end in, this end's frames out."""
        self.check(session)
        clone = self._open.get(session)
        if clone is None:
            raise Pkcs11Error(CKR.OPERATION_NOT_INITIALIZED,
                              "no clone is open on this session (CLONE_OPEN first)")  # fmt: skip
        try:
            return await clone.feed(frames)
        finally:
            if clone.done:
                del self._open[session]

    def check(self, session: int) -> None:
        """Only the session's Crypto Officer feeds its clone."""
        self._co_scope(session)

    def discard(self, session: int) -> None:
        """The session closed: its clone, if any, ends (the target has stored nothing)."""
        self._open.pop(session, None)

    def close(self) -> None:
        self._open.clear()
