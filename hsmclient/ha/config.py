"""The HA groups' configuration in hsmclient's home: ``HOME/hagroups.json`` (owner-only).

The file is written whole and atomically (a temporary file in the same directory,
fsync, rename), so a crash leaves the old configuration or the new one, never half.
The running daemon keeps a copy and re-reads the file when a command tells it to
(``hagroup`` over the control socket).  Nothing secret is in it: members are named by
(server, partition serial), and the Crypto Officer's challenge is never stored.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ped.errors import PedError

CONFIG_FILE = "hagroups.json"
#: Luna's default poll interval for recovery (seconds), and its bounds.
DEFAULT_INTERVAL = 60
INTERVAL_RANGE = (1, 1200)
#: Automatic recovery attempts per member going down (0: only `hagroup recover`).
RETRY_RANGE = (0, 500)
#: A TokenInfo serial has 16 bytes.
MAX_SERIAL = 16


class HaConfigError(PedError):
    """The HA configuration cannot be read, written or changed; the message says why."""


@attrs.frozen(order=True)
class MemberRef:
    """One member partition: the registered server and the partition's serial."""

    server: str
    serial: str

    def __str__(self) -> str:
        return f"{self.server} partition serial {self.serial}"


@attrs.frozen
class HaGroup:
    """One HA group: its label, virtual serial, members, retry count and sync switch."""

    label: str
    serial: str
    members: tuple[MemberRef, ...] = ()
    retry: int = 0
    synchronize: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "serial": self.serial, "retry": self.retry,
                "synchronize": self.synchronize,
                "members": [[m.server, m.serial] for m in self.members]}  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HaGroup:
        members = tuple(MemberRef(str(s), str(n)) for s, n in raw.get("members", []))
        return cls(str(raw["label"]), str(raw["serial"]), members, int(raw.get("retry", 0)),
                   bool(raw.get("synchronize", True)))  # fmt: skip


def group_serial(first_member: MemberRef) -> str:
    """The virtual slot's serial: ``1`` and the first member's serial, as Luna does."""
    return ("1" + first_member.serial)[:MAX_SERIAL]


@attrs.frozen
class HaConfig:
    """Every group, and the recovery poll interval (one for all groups, as in Luna)."""

    groups: tuple[HaGroup, ...] = ()
    interval: int = DEFAULT_INTERVAL

    def group(self, label: str) -> HaGroup:
        for g in self.groups:
            if g.label == label:
                return g
        known = ", ".join(g.label for g in self.groups) or "none"
        raise HaConfigError(f"no HA group {label!r} (groups: {known}); see: hsmclient "
                            "hagroup listgroups")  # fmt: skip

    def has(self, label: str) -> bool:
        return any(g.label == label for g in self.groups)

    def replace(self, group: HaGroup) -> HaConfig:
        """This configuration with *group* added, or put in place of its namesake."""
        others = tuple(g for g in self.groups if g.label != group.label)
        return attrs.evolve(self, groups=(*others, group) if not self.has(group.label)
                            else tuple(group if g.label == group.label else g
                                       for g in self.groups))  # fmt: skip

    def without(self, label: str) -> HaConfig:
        self.group(label)
        return attrs.evolve(self, groups=tuple(g for g in self.groups if g.label != label))

    def group_of(self, member: MemberRef) -> HaGroup | None:
        return next((g for g in self.groups if member in g.members), None)


def _path(home: Path) -> Path:
    return Path(home) / CONFIG_FILE


def load(home: Path) -> HaConfig:
    """The configuration in *home* (none yet: no group, the default interval)."""
    path = _path(home)
    try:
        raw = json.loads(path.read_text())
        groups = tuple(HaGroup.from_json(g) for g in raw.get("groups", []))
        return HaConfig(groups, int(raw.get("interval", DEFAULT_INTERVAL)))
    except FileNotFoundError:
        return HaConfig()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HaConfigError(f"{path}: cannot read the HA groups ({exc}); fix or remove "
                            "the file (the groups are then to be made again)") from None


def save(home: Path, config: HaConfig) -> None:
    """Write *config* atomically, owner-only."""
    path = _path(home)
    text = json.dumps({"interval": config.interval,
                       "groups": [g.to_json() for g in config.groups]}, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hagroups-")  # 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise HaConfigError(f"{path}: cannot write the HA groups: {exc.strerror or exc}") from None


def check_label(label: str, taken: Sequence[str]) -> None:
    """A new group's label: printable, at most 32 bytes (a token label), not in use."""
    if not label or len(label.encode()) > 32 or not label.isprintable():
        raise HaConfigError(f"an HA group label is 1 to 32 printable bytes (got {label!r})")
    if label in taken:
        raise HaConfigError(f"an HA group {label!r} exists already (hsmclient hagroup "
                            "listgroups)")  # fmt: skip
