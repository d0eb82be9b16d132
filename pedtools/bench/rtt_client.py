"""The HSM side of the round-trip figure: connects and logins, direct and over delay proxies.

    python -m pedtools.bench.rtt_client JOB.json

For each target (pedserver's own port, then each delay proxy in front of it) and each
way of holding the PED (``pipelined``: the HSM sends each hold's first frame with its
OP_BEGIN, as ``ped.hsm_api`` does on a version 3 link; ``waiting``: the same HSM made to
wait for OP_GRANTED first, as on a version 2 link), it times *count* connects (a new
link through pedclient + the RPV handshake) and, on each, one login (``read_secret``
of the bench's blue key, 1 of 1, no PIN), after *warmup* untimed ones.  Prints one JSON
object: ``{target: {mode: {"connect_ms": [...], "login_ms": [...]}}}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import trio

from keys.colors import Color
from ped.hsm_api import open_ped_session
from ped.link import PedclientTransport, connect_via_pedclient
from ped.wire.framing import Frame
from pedtools.bench.client import read_rpv
from pedtools.bench.probe import HSM_SERIAL

MODES = ("pipelined", "waiting")


class Waiting:
    """*inner* as an HSM that waits for each OP_GRANTED sees it (no pipelining)."""

    def __init__(self, inner: PedclientTransport) -> None:
        self.inner = inner

    def announce_op_timeout(self, seconds: float) -> None:
        self.inner.announce_op_timeout(seconds)

    async def begin_operation(self, *, wait: float = 0.0) -> None:
        await self.inner.begin_operation(wait=wait)

    async def send(self, frame: Frame) -> None:
        await self.inner.send(frame)

    async def receive(self) -> Frame:
        return await self.inner.receive()

    async def end_operation(self) -> None:
        await self.inner.end_operation()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def one(job: dict[str, Any], rpv: bytearray, port: int, mode: str) -> tuple[float, float]:
    """Milliseconds of one connect (link + RPV handshake) and one login on it."""
    start = time.perf_counter()
    link = await connect_via_pedclient(job["pedclient_socket"], "127.0.0.1", port,
                                       hsm_name="rtt", timeout=60.0)
    transport = link if mode == "pipelined" else Waiting(link)
    try:
        async with open_ped_session(transport, rpv=rpv, hsm_serial=HSM_SERIAL) as ped:
            connected = time.perf_counter()
            with await ped.read_secret(Color.BLUE):
                logged_in = time.perf_counter()
    finally:
        await link.aclose()
    return (connected - start) * 1000, (logged_in - connected) * 1000


async def run(job: dict[str, Any]) -> dict[str, Any]:
    rpv = read_rpv(job["keyring"])
    out: dict[str, Any] = {}
    for target, port in job["targets"].items():
        out[target] = {}
        for mode in MODES:
            samples: dict[str, list[float]] = {"connect_ms": [], "login_ms": []}
            for index in range(job["warmup"] + job["count"]):
                connect, login = await one(job, rpv, port, mode)
                if index >= job["warmup"]:
                    samples["connect_ms"].append(round(connect, 3))
                    samples["login_ms"].append(round(login, 3))
            out[target][mode] = samples
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(args[0]).read_text())
    print(json.dumps({"result": trio.run(run, job)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
