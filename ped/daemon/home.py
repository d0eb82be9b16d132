"""Where a daemon keeps its config, control socket, pid file and log.

Precedence: ``--home DIR`` beats the ``<NAME>_HOME`` environment variable beats the
default.  The default is per user (``$XDG_STATE_HOME/remote-ped/<name>``, else
``~/.local/state/remote-ped/<name>``) and ``/var/lib/remote-ped/<name>`` for root.
The directory is created owner-only (0700); an existing one that others can write to
is refused, because the control socket inside it is how the daemon is commanded.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import ClassVar

import attrs

from ped.errors import PedError


class HomeError(PedError):
    """The daemon's home directory cannot be used."""


def default_home(name: str) -> Path:
    """The default home of daemon *name* for the current user."""
    if os.geteuid() == 0:
        return Path("/var/lib/remote-ped") / name
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "remote-ped" / name


def resolve_home(
    explicit: str | os.PathLike[str] | None,
    name: str,
    *,
    env_var: str | None = None,
    create: bool = True,
) -> Path:
    """Pick the home of daemon *name* and (by default) make sure it exists, owner-only.

    *env_var* defaults to ``<NAME>_HOME`` (``PEDSERVER_HOME``...).
    """
    env_var = env_var or f"{name.upper()}_HOME"
    if explicit:
        home = Path(explicit)
    elif os.environ.get(env_var):
        home = Path(os.environ[env_var])
    else:
        home = default_home(name)
    home = home.expanduser().absolute()
    if create:
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HomeError(
                f"cannot create the {name} home {home}: {exc.strerror}; "
                f"pick another with --home or {env_var}"
            ) from None
    if home.exists():
        info = home.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise HomeError(f"the {name} home {home} is not a directory")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise HomeError(
                f"the {name} home {home} is writable by other users; "
                f"run: chmod go-w {home}"
            )
        if info.st_uid != os.geteuid():
            raise HomeError(
                f"the {name} home {home} belongs to another user (uid {info.st_uid}); "
                "use your own with --home"
            )
    return home


@attrs.frozen
class DaemonLayout:
    """The files in a daemon's home; a subclass names the daemon in ``PROG``."""

    PROG: ClassVar[str] = ""
    home: Path

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    @property
    def control(self) -> Path:
        return self.home / "control.sock"

    @property
    def pid(self) -> Path:
        return self.home / f"{self.PROG}.pid"

    @property
    def log(self) -> Path:
        return self.home / f"{self.PROG}.log"
