"""SIGTERM and SIGINT turn into a graceful stop inside trio; SIGHUP reopens the log files."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable

import trio

from ped.daemon.logs import reopen_logs

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def watch_stop_signals(
    on_stop: Callable[[int], Awaitable[None] | None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call *on_stop(signum)* at the first SIGTERM/SIGINT; a second one is ignored here
    (the stop in progress is bounded by its own timeouts).  Runs until cancelled."""
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            result = on_stop(signum)
            if result is not None:
                await result
            break
        await trio.sleep_forever()


async def watch_reopen_signal(
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reopen the log files at every SIGHUP (after logrotate renamed them), instead of
    SIGHUP's default of ending the daemon.  Runs until cancelled."""
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            count = reopen_logs()
            logging.getLogger().info("SIGHUP: reopened %d log file(s)", count)
