"""pedclient's settings: config keys, defaults and checks, and the home layout."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs

from ped.daemon.config import ConfigKey, ConfigSchema, in_range, log_level_key, settings_fields
from ped.daemon.home import DaemonLayout
from ped.link.hsm_side import PEDCLIENT_SOCKET_NAME
from ped.link.messages import DEFAULT_IDLE_TIMEOUT
from ped.tls.pins import DEFAULT_PEER_PORT

SCHEMA = ConfigSchema(
    [
        ConfigKey("idle_timeout", int, DEFAULT_IDLE_TIMEOUT,
                  "seconds a link may go without a PED operation (the shorter end wins)",
                  in_range(1, 99999)),
        ConfigKey("socket_read_rsp_timeout", int, 120,
                  "seconds without hearing from pedserver (keepalives count) before the "
                  "link is declared lost", in_range(10, 99999)),
        ConfigKey("connect_timeout", int, 10,
                  "longest an HSM's connect may take unless it asks for less",
                  in_range(1, 600)),
        ConfigKey("max_links", int, 16, "links (HSMs) served at once", in_range(1, 1024)),
        ConfigKey("request_timeout", int, 10,
                  "seconds a local HSM has to send its connect request", in_range(1, 300)),
        ConfigKey("socket", str, "",
                  f"local endpoint for HSMs (empty: HOME/{PEDCLIENT_SOCKET_NAME})"),
        log_level_key(),
        ConfigKey("peer_listen", bool, False,
                  "peer-to-peer mode: accept registered pedservers dialling in (pinned TLS)"),
        ConfigKey("peer_port", int, DEFAULT_PEER_PORT,
                  "TCP port for pedservers in peer-to-peer mode (0: any free port)",
                  in_range(0, 65535)),
        ConfigKey("peer_ip", str, "0.0.0.0",  # noqa: S104 (pedservers on other hosts dial in)
                  "address to listen on for pedservers (0.0.0.0 = every interface)"),
    ]
)


@attrs.frozen
class Settings:
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    socket_read_rsp_timeout: int = 120
    connect_timeout: int = 10
    max_links: int = 16
    request_timeout: int = 10
    socket: str = ""
    log_level: str = "info"
    peer_listen: bool = False
    peer_port: int = DEFAULT_PEER_PORT
    peer_ip: str = "0.0.0.0"  # noqa: S104 (pedservers on other hosts dial in)

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Settings:
        return cls(**settings_fields(cls, values))


@attrs.frozen
class Layout(DaemonLayout):
    """Files in pedclient's home; *socket_override* moves the HSMs' endpoint."""

    PROG = "pedclient"
    socket_override: str = ""

    @property
    def endpoint(self) -> Path:
        if self.socket_override:
            return Path(self.socket_override).expanduser()
        return self.home / PEDCLIENT_SOCKET_NAME
