"""Partition objects: create one (encrypted under the partition's data key), list them."""

from __future__ import annotations

import secrets
from hashlib import sha256
from typing import Any

from hsm.crypto import unwrap, wipe, wrap
from hsm.errors import AlreadyExists, InvalidCommand
from hsm.policy import Role
from hsm.state import HsmState, check_name

MAX_OBJECT = 64 * 1024


class ObjectCommands:
    """``object ...`` commands, for the partition's Crypto Officer or Crypto User."""

    def __init__(self, state: HsmState) -> None:
        self._state = state

    def create(self, name: str, label: str, value: bytes | None) -> str:
        st = self._state
        check_name("object label", label)
        st.partition(name)
        _, data_key = st.partition_role_key(name, Role.CO, Role.CU)
        if value is None:
            value = secrets.token_bytes(32)
        if len(value) > MAX_OBJECT:
            raise InvalidCommand(f"an object holds at most {MAX_OBJECT} bytes")
        if any(lbl == label for lbl, _ in st.store.objects(name)):
            raise AlreadyExists(f"partition {name!r} already has an object labelled {label!r}")
        blob = wrap(data_key, value, st.aad(name, label, "object"))
        with st.store.tx():
            st.store.put_object(name, label, blob)
        st.event("object created", partition=name, label=label)
        return f"Object {label!r} created in partition {name!r} ({len(value)} bytes)."

    def list_objects(self, name: str) -> list[dict[str, Any]]:
        st = self._state
        st.partition(name)
        _, data_key = st.partition_role_key(name, Role.CO, Role.CU)
        out = []
        for label, blob in st.store.objects(name):
            value = unwrap(data_key, blob, st.aad(name, label, "object"))
            out.append({"label": label, "size": len(value), "sha256": sha256(value).hexdigest()})
            wipe(value)
        return out
