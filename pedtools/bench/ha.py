"""The HA figure: signing through an HA group's virtual slot with 1, 2 and 3 members, and
the pause an application sees when a member is killed.

    python -m pedtools.bench.ha [--quick] [--out FILE]   (this figure alone)

Set up with the programs' own commands (`pedtools.bench.ha_site`: three pedhsm HSMs of
one cloning domain, hsmclient serving the group), then application processes
(`pedtools.bench.ha_client`: PyKCS11 through Debian's ``p11-kit-client.so``), in one run:

* ``throughput``: `SIGNERS` applications sign back to back through the virtual slot
  (C_Sign, CKM_ECDSA, a P-256 key made through the group) for a window, with the group
  at 1 member, then 2, then 3 (``hagroup addmember``: the key is replicated to each);
  signatures per second and the ratio to one member.
* ``failover``: one application signs while a member is killed with SIGKILL, started
  again and recovered (``hagroup recover``), `KILLS` times over the members in turn.
  The pause of one kill is the longest C_Sign that ended in the `PAUSE_WINDOW` seconds
  after the kill (the call that found its member gone and moved to another); p50 and
  p99 over the kills, beside the p50 of every signature of that run.  Every failed
  signature is counted (the figure expects none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pedtools.bench.ha_client import Signer
from pedtools.bench.ha_site import GROUP, P11KIT_CLIENT, HaSite
from pedtools.bench.stats import percentile, ratio
from pedtools.testing.procs import Site

SIGNERS = 4
MEMBERS = (2, 3)  # quick (a harness check: two HSMs to set up, not three), full
KILLS = (1, 10)  # quick, full
WINDOWS = (1.0, 6.0)  # seconds per member count: quick, full
PAUSE_WINDOW = 2.0
LABEL = "ha-bench-key"


def _job(ha: HaSite, *, generate: bool = False) -> dict[str, Any]:
    return {"module": str(P11KIT_CLIENT), "group": GROUP, "label": LABEL,
            "generate": generate, "challenge_file": str(ha.challenge_file)}  # fmt: skip


def _window(ha: HaSite, env: dict[str, str], seconds: float) -> dict[str, Any]:
    """`SIGNERS` applications signing for *seconds*: signatures per second, failures."""
    signers = [Signer(_job(ha), env, ha.site.root) for _ in range(SIGNERS)]
    for s in signers:
        s.send("go")
    time.sleep(seconds)  # the measuring window itself (nothing is waited for)
    done = [s.stop() for s in signers]
    rate = 0.0
    for d in done:
        calls = d["calls"]
        if calls:
            span = calls[-1][1] - calls[0][0]
            rate += d["ok"] / span if span > 0 else 0.0
    return {"signs_per_s": round(rate, 1), "failed": sum(d["failed"] for d in done),
            "signatures": sum(d["ok"] for d in done)}  # fmt: skip


def _in_use(ha: HaSite, signer: Signer, everyone: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        listed = json.loads(ha.must(ha.hsmclient("hagroup", "listgroups", "--json")))
        members = listed["groups"][0]["members"]
        if sum(m["state"] == "alive" and not m["needs_sync"] for m in members) == everyone:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the HA group did not recover: {members}")
        signer.until(20)


def _failover(ha: HaSite, env: dict[str, str], kills: int) -> dict[str, Any]:
    signer = Signer(_job(ha), env, ha.site.root)
    pauses: list[float] = []
    killed_at: list[float] = []
    try:
        signer.send("go")
        signer.until(40)
        for i in range(kills):
            name = ha.names[i % len(ha.names)]
            killed_at.append(time.monotonic())
            ha.kill(name)
            signer.until(40)
            ha.start_hsm(name)
            ha.must(ha.hsmclient("hagroup", "recover", "--group", GROUP))
            _in_use(ha, signer, len(ha.names))
            signer.until(40)
    finally:
        summary = signer.stop()
    calls = summary["calls"]
    every = [(end - start) * 1000 for start, end in calls]
    for at in killed_at:
        ended = [(end - start) * 1000 for start, end in calls if at <= end <= at + PAUSE_WINDOW]
        pauses.append(max(ended) if ended else 0.0)
    return {"kills": kills, "pause_p50_ms": percentile(pauses, 50),
            "pause_p99_ms": percentile(pauses, 99), "pauses_ms": [round(p, 2) for p in pauses],
            "sign_p50_ms": percentile(every, 50), "signatures": summary["ok"],
            "failed": summary["failed"], "errors": summary["errors"]}  # fmt: skip


def measure(work: Path, quick: bool, log: Any) -> dict[str, Any]:
    """Set up the group in *work*, measure both parts, return the figures."""
    if not P11KIT_CLIENT.exists():
        return {"skipped": f"{P11KIT_CLIENT} is missing: apt-get install p11-kit-modules opensc"}
    seconds, kills, members = (WINDOWS[0], KILLS[0], MEMBERS[0]) if quick else (
        WINDOWS[1], KILLS[1], MEMBERS[1])
    site = Site(work / "ha")
    try:
        ha = HaSite(site, members)
        log(f"HA: {members} pedhsm HSMs of one cloning domain, hsmclient ...")
        ha.up()
        ha.register()
        env = {**ha.app_env(), "PYTHONUNBUFFERED": "1"}
        ha.group(members=1)
        Signer(_job(ha, generate=True), env, site.root).stop()  # the key, made through the group
        rows = []
        for count, name in enumerate(ha.names, start=1):
            if count > 1:
                ha.must(ha.hsmclient("hagroup", "addmember", "--group", GROUP, "--slot",
                                     str(ha.slots[name]), "--password-file",
                                     str(ha.challenge_file)))  # fmt: skip
            log(f"HA: {SIGNERS} applications signing, {count} member(s) ...")
            rows.append({"members": count, **_window(ha, env, seconds)})
        for row in rows:
            row["ratio_to_one"] = ratio(row["signs_per_s"], rows[0]["signs_per_s"])
        log(f"HA: {kills} kills of a member while an application signs ...")
        failover = _failover(ha, env, kills)
    finally:
        site.close()
    return {"signers": SIGNERS, "window_s": seconds, "throughput": rows, "failover": failover,
            "note": ("C_Sign (CKM_ECDSA, SHA-256 digest, P-256) through p11-kit-client.so -> "
                     "hsmclient's HA virtual slot -> one member chosen in turn -> pedhsm; "
                     f"{SIGNERS} application processes. Failover pause: the longest call "
                     f"ending within {PAUSE_WINDOW:g} s after a member's SIGKILL.")}


def markdown(r: dict[str, Any]) -> list[str]:
    """The figure's tables, for `pedtools.bench.report`."""
    ha = r.get("ha")
    if not ha:
        return []
    if "skipped" in ha:
        return [f"HA groups: not measured ({ha['skipped']})", ""]
    lines = [f"| HA group, {ha['signers']} applications | signs/s | ratio to 1 member | "
             "failed |", "| --- | --- | --- | --- |"]  # fmt: skip
    for row in ha["throughput"]:
        lines.append(f"| {row['members']} member(s) | {row['signs_per_s']} | "
                     f"{row['ratio_to_one']} | {row['failed']} |")
    f = ha["failover"]
    lines += ["", f"Failover pause when a member is killed ({f['kills']} kills): p50 "
                  f"{f['pause_p50_ms']} ms, p99 {f['pause_p99_ms']} ms (a signature's p50 "
                  f"in that run: {f['sign_p50_ms']} ms); {f['signatures']} signatures, "
                  f"{f['failed']} failed", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedtools.bench.ha",
                                     description="the HA figure alone")
    parser.add_argument("--quick", action="store_true", help="tiny windows (harness check)")
    parser.add_argument("--out", default="ha-results.json", metavar="FILE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ha-bench-") as tmp:
        def log(text: str) -> None:
            print(f"[bench] {text}", file=sys.stderr, flush=True)

        results = {"ha": measure(Path(tmp), args.quick, log)}
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(markdown(results)))
    return 0 if "skipped" not in results["ha"] else 1


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())
