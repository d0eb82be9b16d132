"""Run every atheris harness for a while: ``make fuzz`` (not part of ``make test``).

Environment:

* ``FUZZ_SECONDS``  seconds per harness (default 60);
* ``FUZZ_TARGETS``  comma-separated harness names to run (default: all);
* ``FUZZ_MERGE=1``  merge what this run found back into ``fuzz/corpus/<harness>/``,
  minimised with libFuzzer's ``-merge=1`` and capped at ``FUZZ_MAX_FILES`` (default 300)
  inputs of at most 4096 bytes.  Without it the kept corpus is only read.
* ``FUZZ_ARTIFACTS`` where crashing inputs go (default ``fuzz/crashes/``).

Exit status 0 when no harness crashed; 1 otherwise, with the crashing inputs listed.  A
crash is any exception other than the project's typed errors (``fuzz.targets.EXPECTED``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESSES = (
    "frames", "messages", "key_image", "rogue_peer", "connections", "p11kit", "pake", "ntls",
    "cloning",
)
MAX_LEN = 4096


def _command(harness: str, *args: str) -> list[str]:
    return [sys.executable, str(HERE / f"fuzz_{harness}.py"), *args]


def _seed_if_empty(corpus: Path, harness: str) -> None:
    if corpus.is_dir() and any(corpus.iterdir()):
        return
    sys.path.insert(0, str(HERE.parent))
    if harness == "p11kit":
        from fuzz import p11kit_target

        p11kit_target.write(corpus)
        return
    from fuzz import seeds

    seeds.write(corpus.parent, only=harness)


def _merge(harness: str, corpus: Path, found: Path, cap: int) -> int:
    """Minimise corpus + found into corpus; return the number of files kept."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-merge-{harness}-") as tmp:
        merged = Path(tmp) / "merged"
        merged.mkdir()
        subprocess.run(
            _command(
                harness, "-merge=1", f"-max_len={MAX_LEN}", str(merged), str(corpus), str(found)
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        files = sorted(
            (p for p in merged.iterdir() if p.stat().st_size <= MAX_LEN),
            key=lambda p: (p.stat().st_size, p.name),
        )[:cap]
        if not files:  # the merge failed: keep what we had
            return len(list(corpus.iterdir()))
        for old in corpus.iterdir():
            old.unlink()
        for path in files:
            shutil.copy2(path, corpus / path.name)
        return len(files)


def run_one(harness: str, seconds: int, artifacts: Path, merge: bool, cap: int) -> bool:
    corpus = HERE / "corpus" / harness
    corpus.mkdir(parents=True, exist_ok=True)
    _seed_if_empty(corpus, harness)
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{harness}-") as tmp:
        found = Path(tmp)
        before = set(artifacts.iterdir())
        proc = subprocess.run(
            _command(
                harness,
                f"-max_total_time={seconds}",
                f"-max_len={MAX_LEN}",
                "-timeout=30",
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/{harness}-",
                str(found),
                str(corpus),
            ),
            check=False,
            capture_output=True,
            text=True,
        )
        log = proc.stderr
        execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
        crashes = sorted(set(artifacts.iterdir()) - before)
        status = "ok" if proc.returncode == 0 and not crashes else "CRASH"
        print(
            f"{harness:12s} {status:5s} {seconds:5d} s "
            f"{execs.group(1) if execs else '?':>9s} inputs run, "
            f"{len(list(found.iterdir()))} new corpus entries",
            flush=True,
        )
        if status != "ok":
            tail = log[log.find("Uncaught Python exception") :] if "Uncaught" in log else log
            print(tail[-4000:], file=sys.stderr)
            for path in crashes:
                print(f"  crashing input: {path}", file=sys.stderr)
        if merge:
            kept = _merge(harness, corpus, found, cap)
            print(f"{'':12s} corpus minimised to {kept} files in {corpus}", flush=True)
        return status == "ok"


def main() -> int:
    seconds = int(os.environ.get("FUZZ_SECONDS", "60"))
    wanted = [t for t in os.environ.get("FUZZ_TARGETS", "").split(",") if t] or list(HARNESSES)
    unknown = set(wanted) - set(HARNESSES)
    if unknown:
        print(f"unknown harness(es) {sorted(unknown)}; choose from {HARNESSES}", file=sys.stderr)
        return 2
    artifacts = Path(os.environ.get("FUZZ_ARTIFACTS", HERE / "crashes")).resolve()
    merge = os.environ.get("FUZZ_MERGE") == "1"
    cap = int(os.environ.get("FUZZ_MAX_FILES", "300"))
    results = [run_one(h, seconds, artifacts, merge, cap) for h in wanted]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
