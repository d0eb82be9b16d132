"""hsmclient's relay of a clone between two slots' HSMs: opaque cloning frames, never read.

A clone of single objects (issue 17: ``hsmclient partition clone``) runs end to end
between the two HSMs in a channel keyed by their partitions' cloning domain
(docs/protocol/cloning.md); hsmclient only opens each end (``CLONE_OPEN``) and hands each
HSM what the other answered (``CLONE_FRAME``, docs/protocol/client.md) until one answers
nothing.  A domain that differs is refused by the target at the handshake and reported
by the source; the target has created nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hsmclient.remote import RemoteApplication
from ped.ntls import messages as m
from ped.pkcs11.constants import CKA, CKR
from ped.pkcs11.token import Attribute, Pkcs11Error

#: Exchanges of one clone at most (a clone takes four; more means a peer misbehaves).
MAX_HOPS = 8


async def relay_clone(
    app: RemoteApplication,
    source: int,
    target: int,
    handles: Sequence[int],
    *,
    tap: Callable[[bytes], None] | None = None,
) -> int:
    """Clone the objects *handles* of *source*'s partition into *target*'s; how many.

    *source* and *target* are sessions of *app* with each partition's Crypto Officer
    logged in.  *tap* sees every opaque hop (tests check nothing in it is a key).
    """
    source_serial, target_serial = app.session_serial(source), app.session_serial(target)
    await app.clone_call(target, lambda rid, s: m.CloneOpen(
        rid, s, m.CloneRole.TARGET, source_serial, ()))  # fmt: skip
    frames = await app.clone_call(source, lambda rid, s: m.CloneOpen(
        rid, s, m.CloneRole.SOURCE, target_serial, tuple(handles)))  # fmt: skip
    ends = (target, source)
    for hop in range(MAX_HOPS):
        if not frames:
            return len(handles)
        if tap is not None:
            tap(frames)
        frames = await app.clone_call(ends[hop % 2], _relay(frames))
    raise Pkcs11Error(CKR.GENERAL_ERROR, f"the clone did not end after {MAX_HOPS} exchanges")


def _relay(frames: bytes) -> Callable[[int, int], m.Request]:
    return lambda rid, session: m.CloneFrame(rid, session, frames)


async def objects_by_label(app: RemoteApplication, session: int, labels: Sequence[str]
                           ) -> list[int]:  # fmt: skip
    """The handles of every object carrying one of *labels*; a label matching none fails."""
    handles: list[int] = []
    for label in labels:
        found = await app.find_objects(session, [Attribute(CKA.LABEL, label.encode())])
        if not found:
            raise Pkcs11Error(CKR.OBJECT_HANDLE_INVALID,
                              f"no object labelled {label!r} on the source slot")  # fmt: skip
        handles.extend(found)
    return handles
