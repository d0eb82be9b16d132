"""`socket:PATH`: a PED (normally ``pedemu``) listening on a Unix socket."""

from __future__ import annotations

import errno

import trio

from ped.device.errors import DeviceAccessDenied, DeviceNotFound
from ped.device.host import StreamPedDriver


class SocketPedDriver(StreamPedDriver):
    """Reaches a PED on a Unix stream socket; each `open()` connects afresh."""

    def __init__(self, path: str, *, uri: str | None = None) -> None:
        super().__init__(uri or f"socket:{path}")
        self.path = path

    async def connect_stream(self) -> trio.abc.Stream:
        try:
            return await trio.open_unix_socket(self.path)
        except PermissionError:
            raise DeviceAccessDenied(
                f"{self.uri}: permission denied on the socket {self.path}; run as the user "
                "that started pedemu, or put both in one group and give the socket g+rw"
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise DeviceNotFound(
                    f"{self.uri}: no PED is listening at {self.path}; start one with "
                    f"`pedemu --keyring DIR --socket {self.path}`"
                ) from None
            raise DeviceNotFound(
                f"{self.uri}: cannot connect to {self.path}: {exc.strerror}"
            ) from None
