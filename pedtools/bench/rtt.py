"""The round-trip figure: login and connect over a long link, in round trips beyond local.

A delay proxy (`pedtools.bench.rtt_proxy`, its own process) stands between pedclient
and pedserver and adds a round-trip time (100, 300 and 600 ms; 100 ms in a quick run).
The HSM side (`pedtools.bench.rtt_client`) times connects (link + RPV handshake) and
logins through each proxy and directly, both pipelined (each hold's first frame with its
OP_BEGIN, link version 3) and waiting for OP_GRANTED (as on a version 2 link).  Each
figure is ``(p50 over the proxy - p50 direct) / RTT``: the round trips the operation
waited for.  The proxy does not delay TCP's own handshake to it (a real long link adds
a round trip for it, and one for TLS in the peer-to-peer mode).

Part of ``make bench``; alone: ``python -m pedtools.bench.rtt_alone [--quick]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from pedtools.bench.procs import spawn, stop, wait_for

FULL_RTTS_MS = (100, 300, 600)
QUICK_RTTS_MS = (100,)
NOTE = ("round trips beyond the local time: (p50 over a delay proxy between pedclient and "
        "pedserver - p50 direct) / added RTT; the proxy does not delay the TCP handshake")


def measure(work: Path, ped_port: int, pedclient_socket: str, keyring: str, *,
            quick: bool, log: Any) -> dict[str, Any]:
    """Run the figure against a running pedclient and pedserver (*ped_port*)."""
    rtts = QUICK_RTTS_MS if quick else FULL_RTTS_MS
    proxies = []
    targets: dict[str, int] = {"direct": ped_port}
    try:
        for rtt in rtts:
            port_file = work / f"rtt-proxy-{rtt}.port"
            proc = spawn(["-m", "pedtools.bench.rtt_proxy", "--upstream-port", str(ped_port),
                          "--rtt-ms", str(rtt), "--port-file", str(port_file)],
                         work / f"rtt-proxy-{rtt}.out")
            proxies.append(proc)
            wait_for(port_file, proc, f"the {rtt} ms delay proxy")
            targets[str(rtt)] = int(port_file.read_text())
        log(f"round trips over delay proxies of {', '.join(map(str, rtts))} ms ...")
        job = {"pedclient_socket": pedclient_socket, "keyring": keyring, "targets": targets,
               "count": 2 if quick else 7, "warmup": 1}
        got = _run_client(job, work)
    finally:
        for proc in proxies:
            stop(proc)
    return figures(got, rtts)


def figures(got: dict[str, Any], rtts: tuple[int, ...]) -> dict[str, Any]:
    """The JSON figures from the samples: p50s and round trips beyond local."""
    def p50(target: str, mode: str, what: str) -> float:
        return round(float(statistics.median(got[target][mode][what])), 1)

    rows = []
    for mode in ("pipelined", "waiting"):
        local = {what: p50("direct", mode, what) for what in ("login_ms", "connect_ms")}
        for rtt in rtts:
            row: dict[str, Any] = {"mode": mode, "rtt_ms": rtt}
            for what in ("login", "connect"):
                far = p50(str(rtt), mode, f"{what}_ms")
                row[f"{what}_p50_ms"] = far
                row[f"{what}_local_p50_ms"] = local[f"{what}_ms"]
                row[f"{what}_round_trips"] = round((far - local[f"{what}_ms"]) / rtt, 2)
            rows.append(row)
    return {"note": NOTE, "rows": rows, "samples": got}


def markdown(r: dict[str, Any]) -> list[str]:
    """The figure's table for the bench's report (nothing if it was not run)."""
    rtt = r.get("rtt")
    if not rtt:
        return []
    lines = ["", "Round trips over a long link (a delay proxy between pedclient and "
             "pedserver; round trips beyond the local time, p50):", "",
             "| added RTT | login | connect | login, HSM waiting (v2) | connect, HSM waiting "
             "(v2) |", "| --- | --- | --- | --- | --- |"]
    rows = {(row["mode"], row["rtt_ms"]): row for row in rtt["rows"]}
    for mode, rtt_ms in sorted(rows):
        if mode != "pipelined":
            continue
        fast, slow = rows[(mode, rtt_ms)], rows.get(("waiting", rtt_ms), {})
        lines.append(
            f"| {rtt_ms} ms | {fast['login_round_trips']} ({fast['login_p50_ms']} ms) "
            f"| {fast['connect_round_trips']} ({fast['connect_p50_ms']} ms) "
            f"| {slow.get('login_round_trips')} ({slow.get('login_p50_ms')} ms) "
            f"| {slow.get('connect_round_trips')} ({slow.get('connect_p50_ms')} ms) |")
    first = rtt["rows"][0]
    lines += ["", f"Local (no proxy): login {first['login_local_p50_ms']} ms, connect "
                  f"{first['connect_local_p50_ms']} ms.", ""]
    return lines


def _run_client(job: dict[str, Any], work: Path) -> dict[str, Any]:
    path = work / "job-rtt.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.rtt_client", str(path)],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench rtt client failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])["result"]
    return result
