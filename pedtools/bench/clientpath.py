"""The client-path figure: ECDSA P-256 signs through PKCS#11 -> p11-kit -> hsmclient -> pedhsm.

    python -m pedtools.bench.clientpath [--quick] [--out FILE]   (this figure alone)

Set up with the programs' own commands (`pedtools.bench.clientpath_site`: pedhsm with an
activated partition on its client listener, hsmclient registered with it and serving
p11-kit's socket), then worker processes (`pedtools.bench.clientpath_client`), each one
application with one PKCS#11 session through Debian's ``p11-kit-client.so``, measured in
the same run, alternately, for K = 1 and 8 concurrent sessions:

* ``sign``: C_Sign (CKM_ECDSA over a SHA-256 digest) with a P-256 key generated on the
  partition: application -> p11-kit-client -> Unix socket -> hsmclient -> mutual TLS
  1.3 -> pedhsm -> the partition's key -> back.
* ``local``: the same signature made in the worker with ``cryptography`` (the floor).
* ``random``: C_GenerateRandom of a signature's size (64 bytes) through the same module,
  processes and hops: one PKCS#11 round trip with no signature.
* ``bare``: 64 bytes sent and read back over the same hops with nothing in them: a Unix
  socket into a relay process (`pedtools.bench.clientpath_relay`, where hsmclient stands)
  and a bare mutual TLS 1.3 connection to an echo process (the bench's TLS front, where
  pedhsm stands).

Figures (``clientpath`` in the JSON): per K, p50/p99 latency and operations per second of
each; ``sign_over_local`` (sign p50 / local p50, K=1), ``sign_over_bare`` (the ratio of
one sign to a bare TLS round trip over the same hops, K=1) and ``sign_over_random``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from ped.tls import ensure_identity
from pedtools.bench.clientpath_site import P11KIT_CLIENT, ClientPathSite
from pedtools.bench.procs import spawn, stop, wait_for
from pedtools.bench.stats import percentile, ratio
from pedtools.testing.procs import Site

MODES = ("sign", "local", "random", "bare")
KS = (1, 8)
LABEL = "bench-key"
FULL_WINDOWS = (5, 2.0)  # rounds, seconds per window
QUICK_WINDOWS = (1, 0.3)


class Worker:
    """One `pedtools.bench.clientpath_client` process, ready to be told to work."""

    def __init__(self, job: Path, env: dict[str, str], log: Path) -> None:
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pedtools.bench.clientpath_client", str(job)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
            )
        self.log = log

    def _line(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        line = out.readline() if out is not None else ""
        if not line:
            self.proc.wait(30)
            raise RuntimeError(f"a client-path worker exited ({self.proc.returncode}):\n"
                               + self.log.read_text(errors="replace")[-2000:])
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ready(self) -> None:
        self._line()

    def go(self, seconds: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {seconds}\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        got: dict[str, Any] = self._line()["result"]
        return got

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _bare_hops(work: Path, procs: list[subprocess.Popen[bytes]]) -> Path:
    """The TLS echo front and the Unix-socket relay in front of it; the relay's socket."""
    relay_home, echo_home = work / "bare-relay", work / "bare-echo"
    for home, name in ((relay_home, "bench-client"), (echo_home, "bench-server")):
        home.mkdir(mode=0o700)
        ensure_identity(home, name)
    port_file = work / "bare-echo.port"
    procs.append(spawn(["-m", "pedtools.bench.p2p_front", "serve", "--mode", "bare-echo",
                        "--home", str(echo_home), "--peer-home", str(relay_home),
                        "--ready", str(port_file)], work / "bare-echo.out"))
    wait_for(port_file, procs[-1], "the TLS echo front")
    sock, ready = work / "bare.sock", work / "bare.ready"
    procs.append(spawn(["-m", "pedtools.bench.clientpath_relay", "--socket", str(sock),
                        "--target", port_file.read_text(), "--home", str(relay_home),
                        "--peer-home", str(echo_home), "--ready", str(ready)],
                       work / "bare-relay.out"))
    wait_for(ready, procs[-1], "the bare relay")
    return sock


def _keygen(cps: ClientPathSite) -> None:
    done = subprocess.run(
        [
            "pkcs11-tool", "--module", str(P11KIT_CLIENT), "--login", "--pin", cps.challenge,
            "--keypairgen", "--key-type", "EC:prime256v1", "--label", LABEL,
        ],
        env=cps.app_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    if done.returncode != 0:  # (pkcs11-tool never prints the PIN it was given)
        raise RuntimeError(f"pkcs11-tool --keypairgen failed: {done.stdout}{done.stderr}")


def measure(work: Path, quick: bool, log: Any) -> dict[str, Any]:
    """Set up the client path in *work*, run every mode for each K, return the figures."""
    if not P11KIT_CLIENT.exists():
        return {"skipped": f"{P11KIT_CLIENT} is missing: apt-get install p11-kit-modules opensc"}
    rounds, window = QUICK_WINDOWS if quick else FULL_WINDOWS
    site = Site(work / "cp")
    procs: list[subprocess.Popen[bytes]] = []
    workers: dict[tuple[str, int], list[Worker]] = {}
    try:
        cps = ClientPathSite(site)
        log("client path: pedhsm with an activated partition, hsmclient ...")
        cps.up()
        cps.register()
        _keygen(cps)
        sock = _bare_hops(work, procs)
        env = {**cps.app_env(), "PYTHONUNBUFFERED": "1"}
        for mode in MODES:
            job = work / f"cp-job-{mode}.json"
            job.write_text(json.dumps({
                "mode": mode, "module": str(P11KIT_CLIENT), "label": LABEL,
                "challenge_file": str(cps.challenge_file), "socket": str(sock),
            }))
            for k in KS:
                workers[mode, k] = [Worker(job, env, work / f"cp-{mode}-{k}-{i}.err")
                                    for i in range(k)]
        for group in workers.values():
            for w in group:
                w.ready()
        samples: dict[tuple[str, int], list[float]] = {key: [] for key in workers}
        counted: dict[tuple[str, int], tuple[int, float]] = {key: (0, 0.0) for key in workers}
        for r in range(rounds):
            log(f"client path: round {r + 1} of {rounds} ...")
            for key, group in workers.items():  # alternately: a noisy moment slows all
                for w in group:
                    w.go(window)
                got = [w.result() for w in group]
                n, seconds = counted[key]
                counted[key] = (n + sum(len(g["ms"]) for g in got),
                                seconds + max(g["seconds"] for g in got))
                for g in got:
                    samples[key] += g["ms"]
    finally:
        for group in workers.values():
            for w in group:
                w.close()
        for proc in procs:
            stop(proc)
        site.close()
    return figures(samples, counted)


def figures(samples: dict[tuple[str, int], list[float]],
            counted: dict[tuple[str, int], tuple[int, float]]) -> dict[str, Any]:
    rows = []
    for k in KS:
        row: dict[str, Any] = {"k": k}
        for mode in MODES:
            n, seconds = counted[mode, k]
            row[f"{mode}_p50_ms"] = percentile(samples[mode, k], 50)
            row[f"{mode}_p99_ms"] = percentile(samples[mode, k], 99)
            row[f"{mode}_per_s"] = round(n / seconds, 1) if seconds else 0.0
            row[f"{mode}_samples"] = len(samples[mode, k])
        rows.append(row)
    one = rows[0]
    return {
        "sessions": rows,
        "sign_over_local": ratio(one["sign_p50_ms"], one["local_p50_ms"]),
        "sign_over_bare": ratio(one["sign_p50_ms"], one["bare_p50_ms"]),
        "sign_over_random": ratio(one["sign_p50_ms"], one["random_p50_ms"]),
        "note": (
            "sign: C_Sign (CKM_ECDSA, SHA-256 digest, P-256 key on the partition) through "
            "p11-kit-client.so -> hsmclient -> mutual TLS 1.3 -> pedhsm; local: the same "
            "signature in-process with cryptography; random: C_GenerateRandom(64) through "
            "the same hops; bare: 64 bytes echoed over a Unix socket -> relay -> bare "
            "mutual TLS 1.3 -> echo (the same hops, nothing in them). K concurrent "
            "sessions are K processes, one PKCS#11 session each."
        ),
    }


def markdown(r: dict[str, Any]) -> list[str]:
    """The figure's table, for `pedtools.bench.report`."""
    cp = r.get("clientpath")
    if not cp:
        return []
    if "skipped" in cp:
        return [f"Client path: not measured ({cp['skipped']})", ""]
    lines = [
        "| client path, K sessions | sign p50 ms | signs/s | in-process p50 ms | "
        "in-process signs/s | random(64) p50 ms | bare TLS round trip p50 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in cp["sessions"]:
        lines.append(f"| {s['k']} | {s['sign_p50_ms']} | {s['sign_per_s']} | "
                     f"{s['local_p50_ms']} | {s['local_per_s']} | {s['random_p50_ms']} | "
                     f"{s['bare_p50_ms']} |")
    lines += ["", f"One sign (K=1) against a bare TLS round trip over the same hops: "
                  f"{cp['sign_over_bare']}; against C_GenerateRandom(64) on the same path: "
                  f"{cp['sign_over_random']}; against the in-process signature: "
                  f"{cp['sign_over_local']}", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.clientpath",
                                     description="the client-path figure alone")
    parser.add_argument("--quick", action="store_true", help="tiny windows (harness check)")
    parser.add_argument("--out", default="clientpath-results.json", metavar="FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cp-bench-") as tmp:
        def log(text: str) -> None:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

        results = {"clientpath": measure(Path(tmp), args.quick, log)}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(markdown(results)))
    return 0 if "skipped" not in results["clientpath"] else 1


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
