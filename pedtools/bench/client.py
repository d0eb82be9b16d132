"""The HSM side of the bench: its own process, talking to pedclient like any HSM.

    python -m pedtools.bench.client JOB.json

reads a job (what to measure, where pedclient and the two pedservers are), runs it and
prints one JSON object on stdout: the samples in milliseconds and what was counted.
Jobs:

* ``login``: one link to the PED pedserver and one to the echo pedserver; after a
  warm-up, a login (``read_secret(BLUE)`` on an open session) and its baseline (the
  same link messages with frames of the same sizes, bounced by the echo device) are
  timed alternately, so that a busy machine slows both alike;
* ``connect``: alternately, a new link + RPV handshake with the orange key, and a new
  link + one round trip of the handshake's sizes through the echo device;
* ``throughput``: K links (each with an open session on its own PED of the pool) log in
  as fast as they can for a while; latencies and the count;
* ``idle``: open N links and hold them (prints ``ready``) until stdin closes;
* ``p2p``: see `pedtools.bench.p2p` (the job itself is `pedtools.bench.p2p_client`).

The keys are the bench's own throwaway keyring: the RPV is read from its orange key
the way a test HSM would, and is never printed.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from keys import load_image
from keys.collector import ShareCollector
from keys.colors import Color
from keys.keyring import Keyring
from ped.hsm_api import open_ped_session
from ped.link import PedclientTransport, connect_via_pedclient
from pedtools.bench.echo_ped import echo_request
from pedtools.bench.limits import raise_fd_limit
from pedtools.bench.p2p_client import run_client_job
from pedtools.bench.probe import HSM_SERIAL, Recorder, bounce
from pedtools.bench.procs import children_of, cpu_seconds


def read_rpv(keyring: str) -> bytearray:
    collector = ShareCollector(Color.ORANGE)
    for path in Keyring(keyring).paths():
        image = load_image(path)
        if not image.is_blank and image.color is Color.ORANGE:
            collector.add(image)
            if collector.complete:
                return collector.secret()
    raise SystemExit("the bench keyring has no orange key")


class Bench:
    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.socket = job["pedclient_socket"]
        self.rpv = read_rpv(job["keyring"])

    async def connect(self, port: int, name: str = "bench") -> PedclientTransport:
        return await connect_via_pedclient(self.socket, "127.0.0.1", port, hsm_name=name,
                                           timeout=60.0)

    # ------------------------------------------------------------------ login
    async def login(self) -> dict[str, Any]:
        count, warmup = self.job["count"], self.job["warmup"]
        ped = await self.connect(self.job["ped_port"])
        echo = await self.connect(self.job["echo_port"])
        recorder = Recorder(ped)
        logins: list[float] = []
        relays: list[float] = []
        try:
            async with open_ped_session(recorder, rpv=self.rpv, hsm_serial=HSM_SERIAL) as s:
                before = (len(recorder.sent), len(recorder.received))
                (await s.read_secret(Color.BLUE, label="HSM SO")).wipe()
                sent = recorder.sent[before[0]:]
                got = recorder.received[before[1]:]
                request = echo_request(got, sent[0])
                cpu0 = time.process_time()
                for i in range(warmup + count):
                    t0 = time.perf_counter()
                    result = await s.read_secret(Color.BLUE, label="HSM SO")
                    t1 = time.perf_counter()
                    result.wipe()
                    await bounce(echo, request, len(got))
                    t2 = time.perf_counter()
                    if i >= warmup:
                        logins.append((t1 - t0) * 1000)
                        relays.append((t2 - t1) * 1000)
                cpu_ms = (time.process_time() - cpu0) * 1000 / (warmup + count)
        finally:
            await ped.aclose()
            await echo.aclose()
        return {"login_ms": logins, "relay_ms": relays, "cpu_ms_per_pair": cpu_ms,
                "frames": {"request": sent, "replies": got}}

    # ------------------------------------------------------------------ connect
    async def connect_job(self) -> dict[str, Any]:
        count, warmup = self.job["count"], self.job["warmup"]
        # Learn the handshake's frame sizes once.
        transport = await self.connect(self.job["ped_port"])
        recorder = Recorder(transport)
        async with open_ped_session(recorder, rpv=self.rpv, hsm_serial=HSM_SERIAL):
            sizes = (list(recorder.sent), list(recorder.received))
        await transport.aclose()
        request = echo_request(sizes[1][:1], sizes[0][0])
        connects: list[float] = []
        baselines: list[float] = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            transport = await self.connect(self.job["ped_port"])
            async with open_ped_session(transport, rpv=self.rpv, hsm_serial=HSM_SERIAL):
                t1 = time.perf_counter()
            await transport.aclose()
            t2 = time.perf_counter()
            echo = await self.connect(self.job["echo_port"])
            await bounce(echo, request, 1)
            t3 = time.perf_counter()
            await echo.aclose()
            if i >= warmup:
                connects.append((t1 - t0) * 1000)
                baselines.append((t3 - t2) * 1000)
        return {"connect_ms": connects, "baseline_ms": baselines,
                "frames": {"request": sizes[0], "replies": sizes[1]}}

    # ------------------------------------------------------------------ throughput
    async def throughput(self) -> dict[str, Any]:
        k, seconds, warmup = self.job["k"], self.job["seconds"], self.job["warmup"]
        rate = float(self.job.get("rate", 0.0))  # logins/s offered in all; 0: closed loop
        port = self.job["ped_port"]
        latencies: list[float] = []
        ready = 0
        all_ready = trio.Event()
        go = trio.Event()
        stop_at = [0.0]
        counts = [0]
        errors: list[str] = []

        async def one(index: int) -> None:
            nonlocal ready
            held = True
            await setup.acquire()  # connect, handshake, warm up: a few links at a time
            try:
                transport = await self.connect(port, f"bench-{index}")
                try:
                    async with open_ped_session(transport, rpv=self.rpv,
                                                hsm_serial=HSM_SERIAL, busy_wait=30.0) as s:
                        for _ in range(warmup):
                            (await s.read_secret(Color.BLUE, label="HSM SO")).wipe()
                        setup.release()
                        held = False
                        ready += 1
                        if ready == k:
                            all_ready.set()
                        await go.wait()
                        # Closed loop (rate 0): log in again at once.  Open loop: this
                        # link logs in every K/rate s (phases spread over the links);
                        # latency counts from the scheduled time, so a login that had to
                        # wait for the previous one is not hidden (no coordinated
                        # omission).
                        period = k / rate if rate else 0.0
                        due = stop_at[0] - seconds + period * index / k
                        while time.perf_counter() < stop_at[0]:
                            if period:
                                delay = due - time.perf_counter()
                                if delay > 0:
                                    await trio.sleep(delay)
                                t0 = due
                                due += period
                            else:
                                t0 = time.perf_counter()
                            result = await s.read_secret(Color.BLUE, label="HSM SO")
                            t1 = time.perf_counter()
                            result.wipe()
                            if t1 <= stop_at[0]:
                                latencies.append((t1 - t0) * 1000)
                                counts[0] += 1
                finally:
                    await transport.aclose()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                all_ready.set()  # measure what came up; the error is reported
            finally:
                if held:
                    setup.release()

        # The first operation on a PED of the pool starts it (an emulated PED is a
        # process): set the links up in small waves, not as a thundering herd.
        setup = trio.Semaphore(8)
        async with trio.open_nursery() as nursery:
            for index in range(k):
                nursery.start_soon(one, index)
            await all_ready.wait()
            # The K links and sessions live for the whole run: out of every collection
            # from now on, as the daemons do with what they built to start (a full
            # collection over them would stall every link of this process at once).
            gc.freeze()
            self._renice_peds()
            cpu_before = self._cpu_snapshot()
            t0 = time.perf_counter()
            stop_at[0] = t0 + seconds
            go.set()
            await trio.sleep_until(trio.current_time() + seconds)
            cpu_after = self._cpu_snapshot()
        wall = min(time.perf_counter(), stop_at[0]) - t0
        cpu = {name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 1000
                           / max(1, counts[0]), 3) for name in cpu_after}
        return {"k": k, "rate": rate, "latency_ms": latencies, "logins": counts[0], "seconds": wall,
                "errors": errors[:5], "error_count": len(errors), "cpu_ms_per_login": cpu}

    def _renice_peds(self) -> None:
        """Run the emulated PEDs at the job's niceness.  They stand in for hardware that
        is not on this machine; K of them as processes on two cores would otherwise
        take K shares of the CPU from the relays every login passes through."""
        nice = self.job.get("ped_nice", 0)
        pid = self.job.get("watch_pids", {}).get("pedserver")
        if not nice or pid is None:
            return
        for child in children_of(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, child, nice)
            except OSError:
                pass

    def _cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the path (the PEDs summed)."""
        out = {"HSM side (bench client)": time.process_time()}
        watch = self.job.get("watch_pids", {})
        for name, pid in watch.items():
            out[name] = cpu_seconds(pid)
        if "pedserver" in watch:
            out["emulated PEDs"] = sum(cpu_seconds(child)
                                       for child in children_of(watch["pedserver"]))
        return out

    # ------------------------------------------------------------------ idle
    async def idle(self) -> dict[str, Any]:
        n = self.job["n"]
        links: list[PedclientTransport] = []
        limiter = trio.CapacityLimiter(64)

        async def open_one(index: int) -> None:
            async with limiter:
                links.append(await self.connect(self.job["ped_port"], f"idle-{index}"))

        async with trio.open_nursery() as nursery:
            for index in range(n):
                nursery.start_soon(open_one, index)
        print(json.dumps({"ready": len(links)}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        async with trio.open_nursery() as nursery:
            for link in links:
                nursery.start_soon(link.aclose)
        return {"links": len(links)}


    # ------------------------------------------------------------------ p2p
    async def p2p(self) -> dict[str, Any]:
        return await run_client_job(self.job, self.rpv)


JOBS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "p2p": Bench.p2p,
    "login": Bench.login,
    "connect": Bench.connect_job,
    "throughput": Bench.throughput,
    "idle": Bench.idle,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    raise_fd_limit(job.get("fds", 4096))
    bench = Bench(job)
    try:
        result = trio.run(JOBS[job["kind"]], bench)
    finally:
        bench.rpv[:] = bytes(len(bench.rpv))
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
