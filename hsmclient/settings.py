"""hsmclient's settings: config keys, defaults and checks, and the home layout.

The applications' socket (p11-kit RPC) is ``HOME/pkcs11.sock`` unless ``--socket``
moves it.  p11-kit's own default, ``$XDG_RUNTIME_DIR/p11-kit/pkcs11``, is deliberately
not the default: a user's ``p11-kit server`` (systemd user unit) may own it, a service
account has no runtime directory, and two hsmclient homes would then fight over one
path.  One home, one daemon, one socket; ``mode show`` prints the exact
``P11_KIT_SERVER_ADDRESS=unix:path=...`` line applications need.  Give
``--socket $XDG_RUNTIME_DIR/p11-kit/pkcs11`` to let them find it without that line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from ped.daemon.config import ConfigKey, ConfigSchema, in_range, log_level_key, settings_fields
from ped.daemon.home import DaemonLayout

SOCKET_NAME = "pkcs11.sock"

SCHEMA = ConfigSchema(
    [
        ConfigKey("socket", str, "",
                  f"the applications' p11-kit socket (empty: HOME/{SOCKET_NAME})"),
        ConfigKey("slot_query_timeout", int, 10,
                  "seconds `slot list`, `verify` and `mode show` wait for the servers' "
                  "answers", in_range(1, 600)),
        log_level_key(),
    ]
)


@attrs.frozen
class Settings:
    socket: str = ""
    slot_query_timeout: int = 10
    log_level: str = "info"

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Settings:
        return cls(**settings_fields(cls, values))


@attrs.frozen
class Layout(DaemonLayout):
    """Files in hsmclient's home; *socket_override* moves the applications' socket."""

    PROG = "hsmclient"
    socket_override: str = ""

    @property
    def endpoint(self) -> Path:
        if self.socket_override:
            return Path(self.socket_override).expanduser().absolute()
        return self.home / SOCKET_NAME


def server_address(socket_path: Path) -> str:
    """The environment line an application needs to reach hsmclient through p11-kit."""
    return f"P11_KIT_SERVER_ADDRESS=unix:path={socket_path}"
