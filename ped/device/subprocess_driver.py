"""`emulated:DIR`: an emulated PED started as a child process joined by a socket pair.

The emulated PED reads key images, so it holds secrets.  The process holding the driver
(pedserver, in a demo) must not: the driver starts ``python -m ped.device.emulated`` as a
child with one end of a socket pair (``--fd N``) and speaks the device transport to it.
This module never imports the emulated PED (import contract of the relays): the child is
named by module, nothing more.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

import trio

from ped.device.errors import DeviceNotFound
from ped.device.host import StreamPedDriver

EMULATOR_MODULE = "ped.device.emulated"
#: Seconds the child has to end by itself once its socket is closed.
CHILD_EXIT_GRACE = 5.0


class SubprocessPedDriver(StreamPedDriver):
    """Starts an emulated PED process per `open()` and stops it on `aclose()`."""

    def __init__(
        self, keyring: str, options: Sequence[str] = (), *, uri: str | None = None
    ) -> None:
        super().__init__(uri or f"emulated:{keyring}")
        self.keyring = keyring
        self.options = list(options)
        self._process: trio.Process | None = None

    def command(self, fd: int) -> list[str]:
        # -P: never import from the working directory (a folder named `keys` there
        # would shadow the real package in the PED's process).
        return [
            sys.executable,
            "-P",
            "-m",
            EMULATOR_MODULE,
            "--keyring",
            self.keyring,
            "--fd",
            str(fd),
            *self.options,
        ]

    async def connect_stream(self) -> trio.abc.Stream:
        if not os.path.isdir(self.keyring):
            raise DeviceNotFound(
                f"{self.uri}: keyring directory {self.keyring!r} does not exist; create it "
                "with `pedkey` or name an existing one"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await trio.lowlevel.open_process(
                self.command(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # The child ignores SIGINT: Ctrl-C is for the parent, which then closes
                # the socket and the child ends cleanly by itself.
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise DeviceNotFound(f"{self.uri}: cannot start the emulated PED: {exc}") from None
        finally:
            theirs.close()
        return trio.SocketStream(trio.socket.from_stdlib_socket(ours))

    async def release_stream(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with trio.move_on_after(CHILD_EXIT_GRACE):
            await process.wait()
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(CHILD_EXIT_GRACE):
                await process.wait()
                return
            process.kill()
            await process.wait()

    @property
    def child_pid(self) -> int | None:
        return self._process.pid if self._process is not None else None
