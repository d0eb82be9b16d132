"""The virtual slot's object handles, sans-IO: one handle per object of the group, mapped
to that object's handle on each member.

Theory of operation
-------------------
An object of an HA group exists once on every member, with a different handle on each.
The application gets one **virtual handle** per object; the object is recognised on a
member by its `ObjectKey`: class, label and CKA_ID.  Objects made through the virtual
slot always carry a CKA_ID (the **group object id**: the application's own, or 16 random
bytes hsmclient adds, the same on every member since cloning copies every attribute), so
the key names one object.  A member's handle is learnt when a search on it returns the
object, or looked up by the key the first time another member must serve it
(`needs_lookup`), and forgotten when the member goes down (it may come back reset).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from hsmclient.ha.config import MemberRef
from ped.pkcs11.constants import CKA
from ped.pkcs11.token import Attribute, AttributeResult

#: The attributes that make an object's key (read from a member to recognise an object).
KEY_TYPES = (CKA.CLASS, CKA.LABEL, CKA.ID)
#: Bytes of a group object id hsmclient adds to a template that has no CKA_ID.
GROUP_ID_BYTES = 16


@attrs.frozen(order=True)
class ObjectKey:
    """What recognises one object on every member: class, label and CKA_ID."""

    cls: int
    label: bytes
    id: bytes

    @classmethod
    def from_results(cls, results: Sequence[AttributeResult]) -> ObjectKey:
        """From C_GetAttributeValue of `KEY_TYPES` (a missing one counts as empty)."""
        got = {r.type: r.value for r in results if r.value is not None}
        klass = got.get(CKA.CLASS, -1)
        label, oid = got.get(CKA.LABEL, b""), got.get(CKA.ID, b"")
        return cls(int(klass) if isinstance(klass, int) else -1,
                   label if isinstance(label, bytes) else b"",
                   oid if isinstance(oid, bytes) else b"")  # fmt: skip

    def template(self) -> list[Attribute]:
        """A search template that finds this object on a member."""
        return [Attribute(CKA.CLASS, self.cls), Attribute(CKA.LABEL, self.label),
                Attribute(CKA.ID, self.id)]  # fmt: skip


def with_group_id(template: Sequence[Attribute], group_id: bytes) -> list[Attribute]:
    """*template* with CKA_ID = *group_id* added unless it names one already."""
    if any(a.type == CKA.ID for a in template):
        return list(template)
    return [*template, Attribute(CKA.ID, group_id)]


class HandleMap:
    """Virtual handles <-> object keys <-> each member's handle (one per application)."""

    def __init__(self) -> None:
        self._keys: dict[int, ObjectKey] = {}
        self._by_key: dict[ObjectKey, int] = {}
        self._on: dict[int, dict[MemberRef, int]] = {}
        self._next = 1

    def __repr__(self) -> str:
        return f"HandleMap(objects={len(self._keys)})"

    def virtual(self, key: ObjectKey, member: MemberRef, handle: int) -> int:
        """The virtual handle of *key* (new if unseen), remembering *member*'s *handle*."""
        virtual = self._by_key.get(key)
        if virtual is None:
            virtual = self._next
            self._next += 1
            self._keys[virtual] = key
            self._by_key[key] = virtual
            self._on[virtual] = {}
        self._on[virtual][member] = handle
        return virtual

    def key(self, virtual: int) -> ObjectKey | None:
        return self._keys.get(virtual)

    def on(self, virtual: int, member: MemberRef) -> int | None:
        """*member*'s handle of the object, if known."""
        return self._on.get(virtual, {}).get(member)

    def known(self, member: MemberRef, handle: int) -> int | None:
        """The virtual handle of *member*'s *handle*, if known."""
        for virtual, on in self._on.items():
            if on.get(member) == handle:
                return virtual
        return None

    def needs_lookup(self, virtual: int, member: MemberRef) -> bool:
        return virtual in self._keys and member not in self._on[virtual]

    def forget_member(self, member: MemberRef) -> None:
        for on in self._on.values():
            on.pop(member, None)

    def forget(self, virtual: int) -> None:
        key = self._keys.pop(virtual, None)
        if key is not None:
            self._by_key.pop(key, None)
            self._on.pop(virtual, None)
