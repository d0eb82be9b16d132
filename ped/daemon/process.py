"""Going to the background, and the readiness handshake.

``<prog> mode start`` (without ``--foreground``) calls `start_background` with the
command line of the same program plus ``--foreground``.  The child runs in a new session
(it survives the terminal) and inherits one end of a pipe, named by the environment
variable `READY_FD_ENV`.  When it listens it calls `notify_ready`; if it cannot start it
calls `notify_failed` with the reason.  The parent returns only then, so
``mode start`` succeeds exactly when the daemon serves, or prints why it does not.  If the
child dies before saying anything, the parent says so and points at the log.  Under
systemd (``Type=notify``, the daemon in the foreground) the same two calls tell systemd
instead, through `ped.daemon.sdnotify`.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

from ped.daemon import sdnotify
from ped.daemon.logs import open_owner_only
from ped.errors import PedError

READY_FD_ENV = "REMOTE_PED_READY_FD"
_MAX_MESSAGE = 4096


class DaemonStartError(PedError):
    """A daemon could not be started; the message carries its reason."""


def _notify(line: str) -> bool:
    fd_text = os.environ.pop(READY_FD_ENV, None)
    if not fd_text:
        return False
    try:
        fd = int(fd_text)
        data = (line.replace("\n", " ")[: _MAX_MESSAGE - 2] + "\n").encode("utf-8", "replace")
        os.write(fd, data)
        os.close(fd)
    except (ValueError, OSError):
        return False
    return True


def notify_ready(detail: str = "") -> bool:
    """Tell the parent we serve, and systemd when it runs us (``Type=notify``); nothing
    in a plain foreground run.  True if a parent (the readiness pipe) was told."""
    sdnotify.notify_ready(detail)
    return _notify(f"ready {detail}".rstrip())


def notify_failed(reason: str) -> bool:
    """Tell the parent (and systemd's status line) why we could not start."""
    sdnotify.notify_status(f"could not start: {reason}")
    return _notify(f"failed {reason}")


def start_background(
    argv: Sequence[str],
    *,
    log_path: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
    env: Mapping[str, str] | None = None,
    name: str = "daemon",
) -> subprocess.Popen[bytes]:
    """Start *argv* (which must include ``--foreground``) detached; return once it is ready.

    Its stdout/stderr go to *log_path* (appended) or nowhere.  Raises `DaemonStartError`
    with the child's own reason, or with its exit code and the log to read.
    """
    read_fd, write_fd = os.pipe()
    child_env = dict(os.environ if env is None else env)
    child_env[READY_FD_ENV] = str(write_fd)
    # os.open with the mode: the log is owner-only from its first byte, whatever the umask
    out = open_owner_only(log_path) if log_path is not None else subprocess.DEVNULL
    try:
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                pass_fds=(write_fd,),
                start_new_session=True,
                env=child_env,
            )
        except OSError as exc:
            raise DaemonStartError(f"cannot run {argv[0]}: {exc.strerror}") from None
        finally:
            os.close(write_fd)
            if log_path is not None:
                os.close(out)
        message = _read_message(read_fd, timeout)
    finally:
        os.close(read_fd)
    see_log = f"; see {log_path}" if log_path is not None else ""
    if message is None:
        proc.send_signal(signal.SIGTERM)
        raise DaemonStartError(
            f"{name} did not report ready within {timeout:g} s and was stopped{see_log}"
        )
    if message.startswith("ready"):
        return proc
    if message.startswith("failed"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        raise DaemonStartError(message[len("failed") :].strip() or f"{name} failed{see_log}")
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        code = None
    raise DaemonStartError(f"{name} exited (code {code}) before it was ready{see_log}")


def _read_message(fd: int, timeout: float) -> str | None:
    """The child's one line; "" if it closed the pipe without one; None on timeout."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while b"\n" not in data and len(data) < _MAX_MESSAGE:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, _MAX_MESSAGE)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")
