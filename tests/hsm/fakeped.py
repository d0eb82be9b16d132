"""An in-test PED behind the engine's PED port (the operator's choices are queued)."""

from __future__ import annotations

import contextlib
import secrets
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from hsm.errors import PedUnavailable
from hsm.pedport import PedSecret, WrongKeyColor, WrongKeyset
from keys.colors import Color


class FakeKey:
    def __init__(self, color: Color, secret: bytes, keyset_id: bytes) -> None:
        self.color, self.secret, self.keyset_id = color, secret, keyset_id


class FakePed:
    """Keys by name; `plan` holds what the operator does next at each PED request.

    A plan entry is a key name (present that key), ``("pin", name)`` (that key with a wrong
    PIN: the PED derives another secret), ``"timeout"``, ``"cancel"`` or ``"unplug"``; with
    no plan the key of the requested keyset is presented.  For imprints an entry names the
    new key or is ``("reuse", existing, new_name)``.
    """

    description = "fake PED"

    def __init__(self) -> None:
        self.keys: dict[str, FakeKey] = {}
        self.plan: deque[Any] = deque()
        self.shown: list[str] = []
        self.reads = 0
        self.last_of: dict[Color, str] = {}

    def _next(self, color: Color, keyset_id: bytes | None) -> Any:
        if self.plan:
            return self.plan.popleft()
        for name, key in self.keys.items():  # a careful operator picks the right key
            if key.color is color and key.keyset_id == keyset_id:
                return name
        return self.last_of[color]

    async def read_secret(self, color: Color, keyset_id: bytes | None, label: str) -> PedSecret:
        self.reads += 1
        action = self._next(color, keyset_id)
        if action == "timeout":
            raise PedUnavailable(
                "no key was presented in time (pedk timeout)", outcome="key-timeout"
            )
        if action == "cancel":
            raise PedUnavailable("the PED operation was cancelled", outcome="cancelled")
        if action == "unplug":
            raise PedUnavailable("the PED went away")
        wrong_pin = isinstance(action, tuple)
        key = self.keys[action[1] if wrong_pin else action]
        if key.color is not color:
            raise WrongKeyColor(f"{key.color.a_label} key was presented, {color.label} expected")
        if keyset_id is not None and key.keyset_id != keyset_id:
            raise WrongKeyset("a key of another keyset was presented")
        secret = bytearray(key.secret)
        if wrong_pin:
            secret[0] ^= 0xFF
        return PedSecret(secret, key.keyset_id)

    async def imprint(self, color: Color, label: str, secret: bytes | bytearray) -> PedSecret:
        action = self.plan.popleft() if self.plan else None
        reused = isinstance(action, tuple) and action[0] == "reuse"
        if isinstance(action, tuple) and action[0] == "reuse":
            key = self.keys[action[1]]
            name = action[2]
            self.keys[name] = key
        else:
            name = action or f"{color.label}{len(self.keys)}"
            key = FakeKey(color, bytes(secret), secrets.token_bytes(8))
            self.keys[name] = key
        self.last_of[color] = name
        return PedSecret(bytearray(key.secret), key.keyset_id, reused=reused)

    async def show(self, text: str) -> None:
        self.shown.append(text)


class FakeRouter:
    def __init__(self, ped: FakePed) -> None:
        self.ped = ped
        self.remote: str | None = None
        self.local = True

    @contextlib.asynccontextmanager
    async def session(
        self, *, local_only: bool = False, notify: Any = None
    ) -> AsyncIterator[FakePed]:
        if local_only and not self.local:
            raise PedUnavailable("no local PED")
        yield self.ped

    async def connect(
        self, host: str, port: int, rpv: bytearray, notify: Any, *, peer: str | None = None
    ) -> str:
        self.remote = f"peer {peer}" if peer is not None else f"{host}:{port}"
        return self.remote

    async def disconnect(self) -> bool:
        was, self.remote = self.remote is not None, None
        return was

    def which(self, *, local_only: bool = False) -> str:
        if local_only or self.remote is None:
            return "local PED"
        return f"remote PED {self.remote} (FAKE-1)"

    def status(self) -> dict[str, Any]:
        return {"mode": "remote" if self.remote else "local", "address": self.remote}
