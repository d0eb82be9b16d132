"""The control socket: how ``mode show``, ``mode stop`` (and pedhsm's commands) reach a
running daemon.

Theory of operation
-------------------
A Unix stream socket in the daemon's home (a 0700 directory; the socket itself 0600;
and on Linux the peer's uid is checked with SO_PEERCRED, so only the owner or root is
served).  One request per connection, as JSON lines (UTF-8, one object per line)::

    client -> {"command": "show", "args": {...}}
    daemon -> {"progress": "Please attend to the PED."}      zero or more
    daemon -> {"ok": true, "result": {...}}                   exactly one, then close
           or {"ok": false, "error": "what went wrong and what to do", "code": "busy"}

Lines are bounded (`MAX_LINE`), a request must arrive within `REQUEST_TIMEOUT`, and a
bad client only ever loses its own connection.  Handlers raise `ControlError` to answer
with an error; any other exception is logged (type only) and answered as "internal".
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ped.daemon.sockets import (
    SocketPath,
    clear_stale_socket,
    listen_owner_only,
    remove_socket_file,
)
from ped.errors import PedError

MAX_LINE = 256 * 1024
REQUEST_TIMEOUT = 10.0
log = logging.getLogger("ped.daemon.control")


class ControlError(PedError):
    """An error answer from a daemon (or to send from a handler)."""

    def __init__(self, message: str, code: str = "error", *, retriable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retriable = retriable


class ControlUnavailable(ControlError):
    """No daemon answers on the control socket (not running, or another home)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "unavailable", retriable=True)


class Progress:
    """Given to handlers: `await progress.send(...)` streams a line before the answer."""

    def __init__(self, stream: trio.abc.Stream | trio.abc.SendStream | None) -> None:
        self._stream = stream

    async def send(self, message: str | dict[str, Any]) -> None:
        if self._stream is None:
            return
        item = {"progress": message}
        await self._stream.send_all(_dump(item))

    async def wait_client_gone(self) -> None:
        """Return when the client hangs up (it sends nothing after its request).

        Handlers of long commands race this against their work, so that a shell the
        user interrupted (Ctrl-C) cancels the operation it asked for.  With no stream
        (an in-process call) it never returns.
        """
        stream = self._stream
        if stream is None or not isinstance(stream, trio.abc.ReceiveStream):
            await trio.sleep_forever()
            return
        while True:
            try:
                data = await stream.receive_some(1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return


Handler = Callable[[str, dict[str, Any], Progress], Awaitable[dict[str, Any] | None]]


def _dump(obj: dict[str, Any]) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    if len(data) > MAX_LINE:
        raise ControlError("answer too large for the control socket", "internal")
    return data


def _peer_uid(sock: socket.socket) -> int | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def line(self) -> bytes | None:
        while True:
            index = self._buffer.find(b"\n")
            if index >= 0:
                line = bytes(self._buffer[:index])
                del self._buffer[: index + 1]
                return line
            if len(self._buffer) > MAX_LINE:
                raise ControlError(f"control line over {MAX_LINE} bytes", "bad-request")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                if self._buffer:
                    raise ControlError("control connection closed mid-line", "bad-request")
                return None
            self._buffer += chunk


def _prepare_path(path: Path) -> None:
    """Remove a stale socket; refuse if a live daemon already answers there."""
    try:
        found = clear_stale_socket(path)
    except OSError as exc:
        raise ControlError(f"cannot check {path}: {exc.strerror or exc}", "in-use") from None
    if found is SocketPath.NOT_A_SOCKET:
        raise ControlError(f"{path} exists and is not a socket; remove it", "in-use")
    if found is SocketPath.LIVE:
        raise ControlError(
            f"a daemon already answers on {path}; stop it first or use another --home", "in-use"
        )


class ControlServer:
    """Serves one control socket; use through `serve_control`."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                uid = _peer_uid(stream.socket)  # type: ignore[arg-type]
                if uid is not None and uid not in (os.geteuid(), 0):
                    log.warning("control: refused a client with uid %d", uid)
                    return
                reader = _LineReader(stream)
                with trio.fail_after(REQUEST_TIMEOUT):
                    line = await reader.line()
                if line is None:
                    return
                try:
                    request = json.loads(line)
                    command = request["command"]
                    args = request.get("args") or {}
                    if not isinstance(command, str) or not isinstance(args, dict):
                        raise TypeError
                except (ValueError, KeyError, TypeError):
                    raise ControlError(
                        'bad control request; send {"command": NAME, "args": {...}}',
                        "bad-request",
                    ) from None
                try:
                    result = await self.handler(command, args, Progress(stream))
                except ControlError:
                    raise
                except PedError as exc:
                    raise ControlError(str(exc), type(exc).__name__) from None
                await stream.send_all(_dump({"ok": True, "result": result or {}}))
            except ControlError as exc:
                answer = {"ok": False, "error": exc.message, "code": exc.code}
                if exc.retriable:
                    answer["retriable"] = True
                try:
                    with trio.move_on_after(REQUEST_TIMEOUT):
                        await stream.send_all(_dump(answer))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client left before its error answer; the daemon carries on
            except trio.TooSlowError:
                log.info("control: a client sent no request within %.0f s", REQUEST_TIMEOUT)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the client went away; nothing to answer
            except Exception as exc:
                log.error("control: handler failed with %s", type(exc).__name__)
                with trio.move_on_after(REQUEST_TIMEOUT):
                    try:
                        await stream.send_all(
                            _dump({"ok": False, "error": "internal error; see the log",
                                   "code": "internal"})
                        )
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass


async def serve_control(
    path: str | os.PathLike[str],
    handler: Handler,
    *,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the control socket at *path* until cancelled; removes it on exit."""
    p = Path(path)
    if len(os.fsencode(p)) > 100:
        raise ControlError(
            f"control socket path {p} is too long for a Unix socket; use a shorter --home",
            "bad-path",
        )
    _prepare_path(p)
    try:
        listener = await listen_owner_only(p)
    except OSError as exc:
        raise ControlError(f"cannot listen on {p}: {exc.strerror}", "bad-path") from None
    server = ControlServer(p, handler)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(p)
            async with listener:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:
                        if exc.errno in (errno.EMFILE, errno.ENFILE):
                            await trio.sleep(0.1)
                            continue
                        raise
                    nursery.start_soon(server._serve_one, stream)
    finally:
        remove_socket_file(p)


def _parse_answer(line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        raise ControlError("the daemon sent a malformed control answer", "bad-answer") from None
    return answer


def _final(answer: dict[str, Any]) -> dict[str, Any]:
    if answer.get("ok"):
        result = answer.get("result")
        return result if isinstance(result, dict) else {}
    raise ControlError(
        str(answer.get("error", "the daemon refused the request")),
        str(answer.get("code", "error")),
        retriable=bool(answer.get("retriable", False)),
    )


def _closed(what: str) -> ControlError:
    return ControlError(f"{what} closed the control connection", "closed", retriable=True)


def _too_slow(what: str, timeout: float) -> ControlError:
    return ControlError(f"{what} did not answer within {timeout:g} s", "timeout", retriable=True)


def _progress_or_final(
    line: bytes, on_progress: Callable[[Any], None] | None
) -> dict[str, Any] | None:
    """The result of a final answer line; None (after *on_progress*) for a progress line."""
    answer = _parse_answer(line)
    if "progress" in answer:
        if on_progress is not None:
            on_progress(answer["progress"])
        return None
    return _final(answer)


def _unavailable(path: Path, what: str) -> ControlUnavailable:
    return ControlUnavailable(
        f"{what} is not running (nothing answers on {path}); start it, or check --home"
    )


def _broke_off(what: str, exc: OSError) -> ControlUnavailable:
    """The daemon's end went away mid-request (killed, crashed): it answers no more."""
    reason = exc.strerror or type(exc).__name__
    return ControlUnavailable(
        f"{what} broke off its answer ({reason}): it stopped or was killed; "
        "check whether it runs (mode show), start it again if not, and retry"
    )


async def control_request(
    path: str | os.PathLike[str],
    command: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float = 30.0,
    on_progress: Callable[[Any], None] | None = None,
    what: str = "the daemon",
) -> dict[str, Any]:
    """Send one request (trio) and return the result; `ControlError` for an error answer."""
    p = Path(path)
    try:
        stream = await trio.open_unix_socket(str(p))
    except (FileNotFoundError, ConnectionRefusedError):
        raise _unavailable(p, what) from None
    async with stream:
        try:
            with trio.fail_after(timeout):
                await stream.send_all(_dump({"command": command, "args": args or {}}))
                reader = _LineReader(stream)
                while True:
                    line = await reader.line()
                    if line is None:
                        raise _closed(what)
                    result = _progress_or_final(line, on_progress)
                    if result is not None:
                        return result
        except trio.TooSlowError:
            raise _too_slow(what, timeout) from None
        except trio.BrokenResourceError:
            raise _closed(what) from None


def control_request_sync(
    path: str | os.PathLike[str],
    command: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float = 30.0,
    on_progress: Callable[[Any], None] | None = None,
    what: str = "the daemon",
) -> dict[str, Any]:
    """Blocking twin of `control_request` for command-line tools (no trio needed)."""
    p = Path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(p))
        except (FileNotFoundError, ConnectionRefusedError):
            raise _unavailable(p, what) from None
        try:
            sock.sendall(_dump({"command": command, "args": args or {}}))
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _broke_off(what, exc) from None
        buffer = bytearray()
        while True:
            index = buffer.find(b"\n")
            if index >= 0:
                line = bytes(buffer[:index])
                del buffer[: index + 1]
                result = _progress_or_final(line, on_progress)
                if result is not None:
                    return result
                continue
            if len(buffer) > MAX_LINE:
                raise ControlError("control answer line too long", "bad-answer")
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise _too_slow(what, timeout) from None
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _broke_off(what, exc) from None
            if not chunk:
                raise _closed(what)
            buffer += chunk
    finally:
        sock.close()
