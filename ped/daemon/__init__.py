"""Shared plumbing of the Remote PED daemons (pedserver, pedclient, pedhsm).

One module per job:

* `ped.daemon.home`: which directory a daemon lives in (``--home``, ``*_HOME``, default),
  and `DaemonLayout`, the files in it.
* `ped.daemon.config`: TOML config files, a typed key schema, and the precedence rule
  "command line beats config file beats built-in defaults".
* `ped.daemon.control`: the owner-only Unix control socket (JSON lines, streamed
  progress) used by ``mode show`` / ``mode stop`` and friends.
* `ped.daemon.sockets`: Unix socket paths: clearing a stale socket file, owner-only
  binding.
* `ped.daemon.skeleton`: the life cycle pedserver, pedclient and hsmclient share (listeners,
  control socket, links nursery, graceful stop).
* `ped.daemon.groups`: trio's ExceptionGroups back to the one error a daemon reports.
* `ped.daemon.pidfile`: the pid file, locked for the daemon's life (who runs).
* `ped.daemon.process`: going to the background with a readiness pipe.
* `ped.daemon.sdnotify`: systemd's readiness notification (``NOTIFY_SOCKET``).
* `ped.daemon.signals`: SIGTERM/SIGINT -> graceful stop inside trio, SIGHUP -> reopen logs.
* `ped.daemon.logs`: logging set-up that never writes payload bytes (text or JSON lines,
  0600 files reopened after rotation).
* `ped.daemon.cli`: the command line pedserver, pedclient and hsmclient share (`daemon_main`,
  ``mode config/stop/show``); `ped.daemon.arguments` its argparse pieces,
  `ped.daemon.startup` ``mode start`` and the foreground run, `ped.daemon.exits` the
  exit codes.
"""

from ped.daemon.config import (
    ConfigError,
    ConfigKey,
    ConfigSchema,
    load_config,
    write_config,
)
from ped.daemon.control import (
    ControlError,
    ControlServer,
    ControlUnavailable,
    Progress,
    control_request,
    control_request_sync,
    serve_control,
)
from ped.daemon.home import HomeError, resolve_home
from ped.daemon.logs import setup_logging
from ped.daemon.pidfile import PidFile
from ped.daemon.process import (
    READY_FD_ENV,
    DaemonStartError,
    notify_failed,
    notify_ready,
    start_background,
)
from ped.daemon.signals import watch_reopen_signal, watch_stop_signals

__all__ = [
    "READY_FD_ENV",
    "ConfigError",
    "ConfigKey",
    "ConfigSchema",
    "ControlError",
    "ControlServer",
    "ControlUnavailable",
    "DaemonStartError",
    "HomeError",
    "PidFile",
    "Progress",
    "control_request",
    "control_request_sync",
    "load_config",
    "notify_failed",
    "notify_ready",
    "resolve_home",
    "serve_control",
    "setup_logging",
    "start_background",
    "watch_reopen_signal",
    "watch_stop_signals",
    "write_config",
]
