"""The shell's current partition: one small owner-only file per user in the HSM's home.

LunaCM keeps a current slot for its shell session; pedhsm's shell is one process per
command, so the choice made by ``pedhsm partition select -p NAME`` is kept in
``HOME/current-partition.UID`` (mode 0600, one line), one per user of the home, and read
by the next command that leaves its partition out.  The HSM daemon knows nothing of it:
it is a convenience of the shell, and a partition named on the command line always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the commands that use the current partition when none is named, and the argument
#: that carries it (a partition named on the command line always wins)
CURRENT = {
    "partition.init": "name",
    "partition.show": "name",
    "partition.showpolicies": "name",
    "partition.changepolicy": "name",
    "partition.resetpw": "name",
    "partition.changepw": "name",
    "role.init": "partition",
    "role.login": "partition",
    "role.resetpw": "partition",
    "role.changepw": "partition",
    "role.activate": "partition",
    "role.deactivate": "partition",
    "object.create": "partition",
    "object.list": "partition",
}

FILE_PREFIX = "current-partition."
MAX_NAME = 256


def current_file(home: Path) -> Path:
    """This user's current-partition file in *home*."""
    return home / f"{FILE_PREFIX}{os.getuid()}"


def read_current(home: Path) -> str | None:
    """The current partition in *home*, or None (never chosen, cleared, or unreadable)."""
    try:
        with open(current_file(home), encoding="utf-8") as fh:
            name = fh.read(MAX_NAME + 1).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name and len(name) <= MAX_NAME and "\n" not in name else None


def write_current(home: Path, name: str) -> None:
    """Make *name* the current partition (written whole, owner-only)."""
    path = current_file(home)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(name + "\n")
    os.chmod(temp, 0o600)  # O_CREAT's mode does not apply to a file left by a crash
    os.replace(temp, path)


def clear_current(home: Path) -> bool:
    """Forget the current partition; True if there was one."""
    try:
        current_file(home).unlink()
    except FileNotFoundError:
        return False
    return True
