"""The trio shell of the p11-kit RPC server: the application socket and its connections.

`open_p11kit_listener` binds the Unix socket applications reach through
``P11_KIT_SERVER_ADDRESS=unix:path=...`` (owner only; a stale socket file is replaced, a
live one refused); `serve_p11kit` accepts applications until cancelled, one
`Application` (from the `Backend`) and one `Dispatcher` per connection.  A connection
whose peer is another user, or whose framing breaks, is closed and logged; every other
connection carries on.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from pathlib import Path

import trio

from hsmclient.p11kit.dispatch import Dispatcher
from hsmclient.p11kit.errors import RpcError, SocketInUse
from hsmclient.p11kit.framing import Frame, RpcConnection, VersionOffered
from ped.daemon.sockets import SocketPath, clear_stale_socket
from ped.errors import PedError
from ped.pkcs11.token import Application, Backend

log = logging.getLogger("hsmclient.p11kit")

_RECEIVE = 65536
#: How long closing an application's sessions may take once its connection is gone.
CLOSE_TIMEOUT = 10.0


def open_p11kit_listener(path: Path, *, backlog: int = 128) -> trio.SocketListener:
    """Listen on the application socket at `path`, reachable by its owner only.

    A socket file nobody listens on (a crash's leftover) is replaced; a live server or a
    file that is not a socket is refused with `SocketInUse`.
    """
    try:
        found = clear_stale_socket(path)
    except OSError as exc:
        raise SocketInUse(f"cannot check {path}: {exc.strerror or exc}") from None
    if found is SocketPath.NOT_A_SOCKET:
        raise SocketInUse(f"{path} exists and is not a socket; remove it")
    if found is SocketPath.LIVE:
        raise SocketInUse(f"a server already answers on {path}; stop it first")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # owner only from the start, no window before the chmod
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _peer_uid(stream: trio.SocketStream) -> int | None:
    try:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    except (OSError, AttributeError):
        return None
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


async def serve_p11kit(
    listener: trio.SocketListener,
    backend: Backend,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve applications on `listener` until cancelled (then close it)."""

    async def handler(stream: trio.SocketStream) -> None:
        await serve_connection(stream, backend)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, [listener])
        task_status.started()


async def serve_connection(stream: trio.SocketStream, backend: Backend) -> None:
    """One application, from its version byte to its last call; never raises but Cancelled."""
    async with stream:
        uid = _peer_uid(stream)
        if uid is not None and uid != os.getuid():
            log.warning(
                "p11-kit connection from uid %d refused: only uid %d may use this socket",
                uid,
                os.getuid(),
            )
            return
        app: Application | None = None
        dispatcher: Dispatcher | None = None
        try:
            connection = RpcConnection()
            while True:
                event = connection.next_event()
                if event is None:
                    if connection.at_clean_end:
                        return
                    connection.receive_data(await stream.receive_some(_RECEIVE))
                    continue
                if isinstance(event, VersionOffered):
                    await stream.send_all(connection.accept_version(event.offered))
                    app = await backend.connect()
                    dispatcher = Dispatcher(app, connection.version or 0)
                    continue
                assert isinstance(event, Frame) and dispatcher is not None
                try:
                    answer = await dispatcher.handle(event.body)
                finally:
                    event.body[:] = bytes(len(event.body))  # a C_Login body holds the PIN
                await stream.send_all(connection.frame(event.code, answer))
        except RpcError as exc:
            log.warning("p11-kit connection closed: %s", exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("p11-kit connection: the application went away")
        except PedError as exc:
            log.warning("p11-kit connection closed: %s", exc)
        except Exception as exc:  # a bug must not take the other applications down
            log.exception("p11-kit connection closed by an internal error: %s", type(exc).__name__)
        finally:
            if app is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                    try:
                        await app.close()
                    except Exception as exc:
                        log.warning("closing the application failed: %s", type(exc).__name__)
