"""The demo's byte taps: `pedtools.testing.tap` proxies run in a trio thread beside the demo.

The demo itself is a plain program running commands one after the other; the taps are
trio tasks, so `TapThread` runs them in a thread of their own and the demo asks it, from
its main thread, to put a tap in front of a port or a socket.  After the daemons have
stopped, `wait_ended` makes sure every connection is over (so every byte is recorded) and
`records` hands over what each tap saw, one byte string per direction.
"""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from pedtools.testing.tap import Tap, tcp_tap, unix_tap


class TapThread:
    """Taps served by a trio event loop in a thread (see the module docstring)."""

    def __init__(self) -> None:
        self.taps: dict[str, Tap] = {}
        self._ready = threading.Event()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def start(self) -> TapThread:
        self._thread.start()
        self._ready.wait()
        return self

    def tcp(self, name: str, target_port: int) -> int:
        """A tap named *name* in front of 127.0.0.1:*target_port*; the port it listens on."""
        assert self._nursery is not None
        tap, port = trio.from_thread.run(
            tcp_tap, self._nursery, target_port, trio_token=self._token
        )
        self.taps[name] = tap
        return port

    def unix(self, name: str, path: Path, target: Path) -> Path:
        """A tap named *name* listening on *path* in front of the socket *target*."""
        assert self._nursery is not None
        self.taps[name] = trio.from_thread.run(
            unix_tap, self._nursery, path, target, trio_token=self._token
        )
        return path

    def wait_ended(self, timeout: float = 30.0) -> None:
        """Wait until every connection each tap took has ended both ways."""
        for tap in self.taps.values():
            if tap.connections:
                trio.from_thread.run(tap.wait_ended, timeout, trio_token=self._token)

    def records(self) -> dict[str, bytes]:
        """What each tap relayed: ``"NAME, up"`` and ``"NAME, down"`` -> the bytes."""
        out: dict[str, bytes] = {}
        for name, tap in self.taps.items():
            out[f"{name}, up"] = bytes(tap.up)
            out[f"{name}, down"] = bytes(tap.down)
        return out

    def close(self) -> None:
        """Stop every tap and the thread (safe to call twice)."""
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join()
