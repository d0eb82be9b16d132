"""pedserver's settings: the config keys, their defaults and checks, and the home layout."""

from __future__ import annotations

import socket
from collections.abc import Mapping

import attrs

from ped.daemon.config import (
    ConfigError,
    ConfigKey,
    ConfigSchema,
    in_range,
    log_level_key,
    settings_fields,
)
from ped.daemon.home import DaemonLayout
from ped.link.messages import DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_PORT

#: The PED served when neither --device nor the config names one: the USB PED, as Luna.
DEFAULT_DEVICE = "usb"


def _ip_check(value: str) -> str | None:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return None
        except OSError:
            continue
    return "must be an IPv4 or IPv6 address (0.0.0.0 or :: for every interface)"


SCHEMA = ConfigSchema(
    [
        ConfigKey("ip", str, "0.0.0.0", "address to listen on (0.0.0.0 = every interface)",  # noqa: S104
                  _ip_check),
        ConfigKey("port", int, DEFAULT_PORT,
                  "TCP port HSM hosts' pedclient dial (0: any free port, see mode show)",
                  in_range(0, 65535)),
        ConfigKey("device", str, DEFAULT_DEVICE,
                  "PED device URI: usb, usb:VID:PID[:SERIAL], socket:PATH, "
                  "emulated:DIR[?operator=auto]; several (a pool), one a line"),
        ConfigKey("idle_timeout", int, DEFAULT_IDLE_TIMEOUT,
                  "seconds a link may go without a PED operation (the shorter end wins)",
                  in_range(1, 99999)),
        ConfigKey("socket_read_rsp_timeout", int, 120,
                  "seconds without hearing anything from a link (keepalives count) before "
                  "it is declared dead; keep it above twice the keepalive interval",
                  in_range(10, 99999)),
        ConfigKey("keepalive_interval", int, DEFAULT_KEEPALIVE_INTERVAL,
                  "seconds between keepalives on a quiet link", in_range(1, 3600)),
        ConfigKey("max_links", int, 32, "links (HSM sessions) served at once",
                  in_range(1, 1024)),
        ConfigKey("max_handshakes", int, 128,
                  "connections allowed to be in their link hello at once", in_range(1, 4096)),
        ConfigKey("max_handshakes_per_source", int, 8,
                  "connections one address may have in their link hello at once (a flood "
                  "from one host never refuses another)", in_range(1, 4096)),
        ConfigKey("hello_timeout", int, 10, "seconds a new connection has to send its hello",
                  in_range(1, 300)),
        ConfigKey("max_op_wait", int, 60,
                  "longest an HSM may wait for a busy PED before it is told 'busy'",
                  in_range(0, 600)),
        ConfigKey("rpv_handshake_timeout", int, 120,
                  "seconds a new link has to complete an RPV handshake with the PED before "
                  "it is closed (not counting a wait for a busy PED; never on a peer link)",
                  in_range(10, 99999)),
        ConfigKey("op_start_timeout", int, 30,
                  "seconds a link holding the PED has to send it its first end-to-end "
                  "frame (an HSM sends at once) before the link is closed",
                  in_range(1, 3600)),
        ConfigKey("max_op_hold", int, 980,
                  "longest a link may hold the PED for one operation: the HSM's operation "
                  "timeout (pedo, 920 s by default) plus a grace; raise it with pedo (a "
                  "link that announces its pedo is held at most pedo + 30 s, never longer)",
                  in_range(10, 200000)),
        ConfigKey("log_repeat_interval", int, 10,
                  "seconds over which repeated log lines (refused connections...) are "
                  "summarised in one line with a count", in_range(1, 3600)),
        ConfigKey("log_repeat_burst", int, 5,
                  "lines of one kind written per interval before they are summarised",
                  in_range(1, 10000)),
        ConfigKey("name", str, "", "name shown to HSMs (empty: this host's name)"),
        log_level_key(),
    ]
)


@attrs.frozen
class Settings:
    ip: str = "0.0.0.0"  # noqa: S104 (a relay for HSMs on other hosts; see docs)
    port: int = DEFAULT_PORT
    device: str = DEFAULT_DEVICE
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT
    socket_read_rsp_timeout: int = 120
    keepalive_interval: int = DEFAULT_KEEPALIVE_INTERVAL
    max_links: int = 32
    max_handshakes: int = 128
    max_handshakes_per_source: int = 8
    hello_timeout: int = 10
    max_op_wait: int = 60
    rpv_handshake_timeout: int = 120
    op_start_timeout: int = 30
    max_op_hold: int = 980
    log_repeat_interval: int = 10
    log_repeat_burst: int = 5
    name: str = ""
    log_level: str = "info"

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> Settings:
        settings = cls(**settings_fields(cls, values))
        if settings.socket_read_rsp_timeout < 2 * settings.keepalive_interval:
            raise ConfigError(
                f"socket_read_rsp_timeout ({settings.socket_read_rsp_timeout} s) must be at "
                f"least twice keepalive_interval ({settings.keepalive_interval} s), or healthy "
                "quiet links would be dropped"
            )
        return settings

    @property
    def devices(self) -> tuple[str, ...]:
        """The PED URIs: one, or a pool (``device`` holds one URI a line); a blank
        ``device`` (a config file written before USB was the default) is the USB PED."""
        uris = tuple(line.strip() for line in self.device.splitlines() if line.strip())
        return uris or (DEFAULT_DEVICE,)

    @property
    def server_name(self) -> str:
        return (self.name or socket.gethostname())[:64]


@attrs.frozen
class Layout(DaemonLayout):
    """Files in pedserver's home."""

    PROG = "pedserver"
