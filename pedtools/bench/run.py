"""The bench run: set up keys and processes, run every job, compute the figures.

See `pedtools.bench` for what is measured and why each baseline is fair.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs

from keys import Keyring, derive_pin_secret, new_keyset
from keys.colors import Color
from pedtools.bench import backup, clientpath, ha, report, rtt
from pedtools.bench.limits import BENCH_SERVER_CONFIG, raise_fd_limit
from pedtools.bench.p2p import run_p2p_jobs
from pedtools.bench.procs import (
    FD_LIMIT,
    Daemon,
    children_of,
    cpu_seconds,
    rss_kib,
    run_client,
    spawn,
    stop,
    wait_for,
)
from pedtools.bench.stats import percentile, ratio


@attrs.frozen
class Plan:
    login_count: int
    connect_count: int
    p2p_count: int
    warmup: int
    ks: tuple[int, ...]
    seconds: float
    idle_links: int
    pin_rounds: int
    ped_nice: int = 19
    #: Open loop at K=256: 10% over the 500 logins/s the target asks for, so that
    #: "done >= 500/s" is a finding, not the offer read back (the logins still in flight
    #: when the window closes are not counted, so an offer of exactly 500 reads 499.x).
    offered_rate: float = 550.0
    only_throughput: bool = False
    only_latency: bool = False


FULL = Plan(login_count=1000, connect_count=200, p2p_count=200, warmup=50,
            ks=(1, 16, 64, 256), seconds=10.0, idle_links=1000, pin_rounds=5)
QUICK = Plan(login_count=20, connect_count=5, p2p_count=5, warmup=2, ks=(1, 2),
             seconds=1.0, idle_links=20, pin_rounds=1, offered_rate=20.0)


def make_keys(directory: Path) -> None:
    keyring = Keyring(directory)
    keyring.imprint(new_keyset(Color.ORANGE, "Remote PED Vector"), create=True)
    keyring.imprint(new_keyset(Color.BLUE, "HSM SO"), create=True)


def machine() -> dict[str, Any]:
    import cryptography
    import trio

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "cryptography": cryptography.__version__,
        "load_average_at_start": load,
        "fd_soft_limit": raise_fd_limit(FD_LIMIT),
    }


def pin_kdf_ms(rounds: int) -> float:
    secret = bytearray(32)
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        derived = derive_pin_secret(secret, bytes(16), "12345678")
        samples.append((time.perf_counter() - t0) * 1000)
        derived[:] = bytes(len(derived))
    return round(statistics.median(samples), 3)


class Rig:
    """The processes of one bench run."""

    def __init__(self, work: Path, plan: Plan) -> None:
        self.work = work
        self.plan = plan
        self.keyring = work / "keys"
        self.keyring.mkdir()
        make_keys(self.keyring)
        self.daemons: list[Daemon] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        server_config = BENCH_SERVER_CONFIG
        self.ped_uri = f"emulated:{self.keyring}?operator=auto"
        echo_sock = work / "echo.sock"
        echo = spawn(["-m", "pedtools.bench.echo_ped", "--socket", str(echo_sock)],
                     work / "echo.out")
        self.procs.append(echo)
        self.client = self._daemon("pedclient", "client",
                                   {"max_links": 1024, "connect_timeout": 600}, [])
        self.ped_server = self._daemon("pedserver", "server-ped", server_config,
                                       ["--ip", "127.0.0.1", "--port", "0",
                                        "--device", self.ped_uri])
        wait_for(echo_sock, echo, "the echo device")
        self.echo_server = self._daemon("pedserver", "server-echo", server_config,
                                        ["--ip", "127.0.0.1", "--port", "0",
                                         "--device", f"socket:{echo_sock}"])
        self.client.wait_ready()
        self.ped_port = int(self.ped_server.wait_ready()["port"])
        self.echo_port = int(self.echo_server.wait_ready()["port"])

    def _daemon(self, program: str, name: str, config: dict[str, Any],
                extra: list[str]) -> Daemon:
        daemon = Daemon(program, self.work / name, config, extra)
        self.daemons.append(daemon)
        return daemon

    def pool_server(self, k: int) -> tuple[Daemon, int]:
        devices: list[str] = []
        for _ in range(k):
            devices += ["--device", self.ped_uri]
        daemon = self._daemon("pedserver", f"server-pool-{k}",
                              BENCH_SERVER_CONFIG,
                              ["--ip", "127.0.0.1", "--port", "0", *devices])
        return daemon, int(daemon.wait_ready()["port"])

    def job(self, kind: str, **extra: Any) -> dict[str, Any]:
        return {"kind": kind, "pedclient_socket": str(self.client.home / "pedclient.sock"),
                "keyring": str(self.keyring), "ped_port": self.ped_port,
                "echo_port": self.echo_port, "fds": FD_LIMIT, **extra}

    def close(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
        for proc in self.procs:
            stop(proc)


def run(plan: Plan, out: Path, work: Path, log: Any) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "quick": plan.login_count < 100,
                               "ped_nice_during_throughput": plan.ped_nice}
    log(f"machine: {results['machine']['cpu_count']} CPUs, Python "
        f"{results['machine']['python']}")
    results["pin_kdf_ms"] = pin_kdf_ms(plan.pin_rounds)
    log(f"pin_kdf_ms {results['pin_kdf_ms']}")
    rig = Rig(work, plan)
    try:
        if not plan.only_throughput:
            measure_latencies(rig, plan, results, log)
            results["clientpath"] = clientpath.measure(work, results["quick"], log)
            results["ha"] = ha.measure(work, results["quick"], log)
            results["backup"] = backup.measure(work, results["quick"], log)
        results["throughput"] = []
        if plan.only_latency:
            return results
        # One pedserver with a pool of max(K) PEDs serves every K: the pool gives each
        # link the least busy PED, so K links use K PEDs (the others stay idle).
        pool, port = rig.pool_server(max(plan.ks))
        try:
            for k in plan.ks:
                log(f"throughput K={k} ...")
                results["throughput"].append(throughput(rig, plan, k, port, pool.pid))
            # The target for K=256 is a rate: offer it (open loop) and see what holds.
            k = max(plan.ks)
            log(f"K={k} at {plan.offered_rate:g} logins/s offered ...")
            results["offered"] = throughput(rig, plan, k, port, pool.pid,
                                            rate=plan.offered_rate)
        finally:
            pool.stop()
    finally:
        rig.close()
    return results


def measure_latencies(rig: Rig, plan: Plan, results: dict[str, Any], log: Any) -> None:
    work = rig.work
    log("login vs relay ...")
    # The PED process exists once the first session is open: open one first.
    run_client(rig.job("login", count=1, warmup=0), work, "login-warm")
    pids = {"pedclient": rig.client.pid, "pedserver (PED)": rig.ped_server.pid,
            "pedserver (echo)": rig.echo_server.pid, "echo device": rig.procs[0].pid}
    for child in children_of(rig.ped_server.pid):
        pids["emulated PED"] = child
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    got = run_client(rig.job("login", count=plan.login_count, warmup=plan.warmup),
                     work, "login")
    n = plan.login_count + plan.warmup + 1
    cpu = {name: round((cpu_seconds(pid) - cpu_before[name]) * 1000 / n, 3)
           for name, pid in pids.items()}
    cpu["HSM side (bench client)"] = round(got["cpu_ms_per_pair"], 3)
    results["cpu_ms_per_login_and_relay"] = cpu
    results["login_p50_ms"] = percentile(got["login_ms"], 50)
    results["login_p99_ms"] = percentile(got["login_ms"], 99)
    results["relay_p50_ms"] = percentile(got["relay_ms"], 50)
    results["relay_p99_ms"] = percentile(got["relay_ms"], 99)
    results["login_ratio"] = ratio(results["login_p50_ms"], results["relay_p50_ms"])
    results["login_frames"] = got["frames"]
    results["login_samples"] = len(got["login_ms"])
    log("connect vs baseline ...")
    got = run_client(rig.job("connect", count=plan.connect_count, warmup=plan.warmup),
                     work, "connect")
    results["connect_p50_ms"] = percentile(got["connect_ms"], 50)
    results["connect_baseline_p50_ms"] = percentile(got["baseline_ms"], 50)
    results["connect_ratio"] = ratio(results["connect_p50_ms"],
                                     results["connect_baseline_p50_ms"])
    results["rtt"] = rtt.measure(work, rig.ped_port, str(rig.client.home / "pedclient.sock"),
                                 str(rig.keyring), quick=results["quick"], log=log)
    log("p2p connect vs bare TLS ...")
    results.update(run_p2p_jobs(rig, plan))
    log("idle links ...")
    results.update(idle_links(rig, plan))


def throughput(rig: Rig, plan: Plan, k: int, port: int, pool_pid: int,
               rate: float = 0.0) -> dict[str, Any]:
    job = rig.job("throughput", k=k, seconds=plan.seconds, warmup=max(2, plan.warmup // 10),
                  rate=rate)
    job["ped_port"] = port
    job["watch_pids"] = {"pedclient": rig.client.pid, "pedserver": pool_pid}
    job["ped_nice"] = plan.ped_nice
    got = run_client(job, rig.work, f"throughput-{k}")
    return {
        "k": k,
        "offered_per_s": rate or None,
        "logins": got["logins"],
        "seconds": round(got["seconds"], 3),
        "logins_per_s": round(got["logins"] / got["seconds"], 1) if got["seconds"] else 0.0,
        "p50_ms": percentile(got["latency_ms"], 50),
        "p99_ms": percentile(got["latency_ms"], 99),
        "errors": got["error_count"],
        "error_samples": got["errors"],
        "cpu_ms_per_login": got["cpu_ms_per_login"],
    }


def idle_links(rig: Rig, plan: Plan) -> dict[str, Any]:
    path = rig.work / "job-idle.json"
    path.write_text(json.dumps(rig.job("idle", n=plan.idle_links)))
    pid = rig.ped_server.pid
    time.sleep(0.5)
    before = rss_kib(pid)
    client_before = rss_kib(rig.client.pid)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pedtools.bench.client", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise RuntimeError("the idle-links client failed")
    opened = json.loads(line)["ready"]
    time.sleep(1.0)
    after = rss_kib(pid)
    client_after = rss_kib(rig.client.pid)
    proc.stdin.close()
    proc.wait(timeout=300)
    return {
        "idle_links": opened,
        "idle_link_kib": round((after - before) / max(1, opened), 2),
        "pedserver_rss_kib": {"before": before, "after": after},
        "pedclient_idle_link_kib": round((client_after - client_before) / max(1, opened), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pedtools.bench",
        description="Remote PED benchmark: latency, setup cost, scale and memory, each "
        "beside a baseline measured in the same run on the same process topology.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts: checks the harness and the JSON (CI smoke)")
    parser.add_argument("--out", default="bench-results.json", metavar="FILE",
                        help="where to write the JSON results (default bench-results.json)")
    parser.add_argument("--markdown", metavar="FILE",
                        help="also write the results table as markdown")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (logs of every process)")
    parser.add_argument("--k", type=int, action="append", metavar="K",
                        help="throughput with K links (repeatable; default 1 16 64 256)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--throughput-only", action="store_true",
                        help="only the K-link throughput runs (the JSON then lacks the "
                        "latency figures)")
    only.add_argument("--latency-only", action="store_true",
                        help="skip the K-link throughput runs (quick A/B of login, connect, "
                        "p2p and idle-link figures)")
    parser.add_argument("--ped-nice", type=int, default=19, metavar="N",
                        help="niceness of the emulated PEDs during throughput runs "
                        "(default 19; 0 to leave them at the relays' priority)")
    parser.add_argument("--rate", type=float, metavar="R",
                        help="logins/s offered in all in the open-loop run at the largest K "
                        f"(default {FULL.offered_rate:g})")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rate:
        plan = attrs.evolve(plan, offered_rate=args.rate)
    if args.k:
        plan = attrs.evolve(plan, ks=tuple(args.k))
    plan = attrs.evolve(plan, ped_nice=args.ped_nice, only_throughput=args.throughput_only,
                        only_latency=args.latency_only)
    raise_fd_limit(FD_LIMIT)
    work = Path(tempfile.mkdtemp(prefix="ped-bench-"))

    def log(text: str) -> None:
        print(f"[bench] {text}", file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        results = run(plan, Path(args.out), work, log)
    finally:
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["bench_seconds"] = round(time.monotonic() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    table = report.markdown(results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    log(f"results written to {args.out}")
    return 0
