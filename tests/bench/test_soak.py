"""``make soak``: a tiny soak through every daemon writes a complete report (no timing or
growth is asserted: a short run cannot tell), and the slope, fd and window arithmetic is
right on synthetic samples."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pedtools.bench.soak_figures import (
    Sample,
    after_warmup,
    daemon_figures,
    failures,
    latency_windows,
    markdown,
    native_figures,
    refit,
    slope,
    slope_stderr,
    traced_figures,
    window,
)
from pedtools.bench.soak_site import DAEMONS

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[2]
DAEMON_KEYS = {"operations", "measured_operations", "samples", "rss_kb_start", "rss_kb_end",
               "rss_kb_per_10k_ops", "rss_slope_stderr", "resolution_kb_per_10k_ops",
               "fds_start", "fds_end", "log_bytes_per_op", "rss_kb_by_tenth", "rss_rises",
               "rss_anon_kb_per_10k_ops", "rss_file_kb_per_10k_ops", "rss_anon_kb_start",
               "rss_anon_kb_end", "rss_file_kb_start", "rss_file_kb_end",
               "rss_kb_median_by_tenth", "rss_kb_per_10k_ops_last_half"}
WINDOW_KEYS = {"window_s", "count", "first_p50_ms", "first_p99_ms", "last_p50_ms",
               "last_p99_ms"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_tiny_soak_reports_every_daemon(tmp_path: Path) -> None:
    out, md = tmp_path / "soak.json", tmp_path / "soak.md"
    rounds = 200
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.soak", "--operations", str(rounds), "--out",
         str(out), "--markdown", str(md)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    # 0: nothing grew; 1: something grew (a run this short may well see a page or two);
    # anything else is a broken rig.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["rounds"] == rounds and _positive(r["seconds"])
    assert list(r["daemons"]) == list(DAEMONS)
    assert set(r["pids"]) == set(DAEMONS) and len(set(r["pids"].values())) == len(DAEMONS)
    for name, d in r["daemons"].items():
        assert set(d) == DAEMON_KEYS, name
        served = 2 * rounds if name == "pedhsm" else rounds
        assert d["operations"] == served, (name, d)
        assert 0 < d["measured_operations"] < served and d["samples"] >= 2
        assert _positive(d["rss_kb_start"]) and _positive(d["fds_start"]), (name, d)
        # the kernel's split: anonymous and file-backed pages, together at most VmRSS
        assert _positive(d["rss_anon_kb_start"]) and _positive(d["rss_file_kb_start"])
        assert d["rss_anon_kb_start"] + d["rss_file_kb_start"] <= d["rss_kb_start"] + 8
        assert isinstance(d["rss_kb_per_10k_ops"], float)
        assert len(d["rss_kb_by_tenth"]) == 11 and d["rss_kb_by_tenth"][-1] == d["rss_kb_end"]
        assert len(d["rss_kb_median_by_tenth"]) == 10
        assert isinstance(d["rss_kb_per_10k_ops_last_half"], float)
        assert (d["log_bytes_per_op"] is None) == (name == "pedemu")
    for kind in ("login", "sign"):
        lat = r["latency"][kind]
        assert set(lat) == WINDOW_KEYS and lat["count"] == rounds
        for key in WINDOW_KEYS - {"count"}:
            assert _positive(lat[key]), (kind, key, lat)
    assert (done.returncode == 1) == bool(r["failures"])
    for failure in r["failures"]:
        assert f"FAILURE: {failure}" in done.stderr
    table = md.read_text()
    assert table == done.stdout.strip() + "\n"
    assert f"Soak: {rounds} rounds" in table
    for name in DAEMONS:
        assert f"| {name} | " in table
    assert "| login | " in table and "| sign | " in table
    assert "Does it level off?" in table and "| 90-100% | last half kB / 10,000 ops |" in table
    audit = r["pedhsm_audit_bytes_per_login"]
    assert _positive(audit) and f"): {audit} bytes per login." in table


def test_slope_is_least_squares() -> None:
    assert slope([0, 1, 2, 3], [5, 7, 9, 11]) == pytest.approx(2.0)
    # a step in the middle: the fitted line, not end minus start
    assert slope([0, 1, 2, 3], [0, 0, 4, 4]) == pytest.approx(1.6)
    assert slope([1, 1], [1, 9]) == 0.0 and slope([1], [1]) == 0.0
    with pytest.raises(ValueError):
        slope([1, 2], [1])


def test_growth_per_10k_ops_after_warmup() -> None:
    # 100 kB of start-up growth in the first 20% (left out), then 0.5 kB per 1,000 ops
    samples = [Sample(ops, 1000 + min(ops, 2000) // 20 + ops // 2000, 12, 40 * ops)
               for ops in range(0, 10_001, 500)]
    kept = after_warmup(samples)
    assert kept[0].ops == 2000 and kept[-1].ops == 10_000
    d = daemon_figures(samples)
    assert d["operations"] == 10_000 and d["measured_operations"] == 8000
    assert d["rss_kb_per_10k_ops"] == pytest.approx(5.0, abs=0.3)
    assert d["log_bytes_per_op"] == 40.0
    assert (d["fds_start"], d["fds_end"]) == (12, 12)
    assert daemon_figures(samples, has_log=False)["log_bytes_per_op"] is None
    assert d["rss_kb_by_tenth"] == [1000, 1050, 1101, 1101, 1102, 1102, 1103, 1103, 1104,
                                    1104, 1105]
    with pytest.raises(ValueError):
        daemon_figures(samples[:1])


def test_failures_name_the_daemon_and_figure() -> None:
    flat = [Sample(ops, 2000, 10) for ops in range(0, 50_001, 1000)]
    grows = [Sample(ops, 2000 + ops // 2500, 10) for ops in range(0, 50_001, 1000)]
    leaks = [Sample(ops, 2000, 10 + ops // 40_000) for ops in range(0, 50_001, 1000)]
    daemons = {"pedserver": daemon_figures(flat), "pedhsm": daemon_figures(grows),
               "hsmclient": daemon_figures(leaks)}
    found = failures(daemons)
    assert len(found) == 2
    assert found[0].startswith("pedhsm: RSS grows 4.0 kB per 10,000 operations")
    assert found[1] == "hsmclient: open fds grew from 10 to 11"
    assert failures({"pedserver": daemon_figures(flat)}) == []
    # 1 kB per 10,000 operations is the limit: at it passes, above it fails
    at_limit = [Sample(ops, 2000 + ops // 10_000, 10) for ops in range(0, 100_001, 10_000)]
    assert daemon_figures(at_limit)["rss_kb_per_10k_ops"] == pytest.approx(1.0)
    assert failures({"x": daemon_figures(at_limit)}) == []
    report = markdown({"rounds": 3, "seconds": 1.0, "daemons": daemons, "failures": found,
                       "latency": {}})
    assert "FAILED:" in report and f"- {found[0]}" in report


def test_latency_windows_first_and_last() -> None:
    assert window(120.0) == 12.0 and window(600.0) == 60.0 and window(2400.0) == 60.0
    times = [(t / 10, 1.0 if t < 100 else 3.0) for t in range(1000)]  # 100 s, 10 per s
    lat = latency_windows(times, 100.0)
    assert lat["window_s"] == 10.0 and lat["count"] == 1000
    assert (lat["first_p50_ms"], lat["last_p50_ms"]) == (1.0, 3.0)


def test_warmup_is_at_least_min_ops_but_never_more_than_half() -> None:
    short = [Sample(ops, 1000, 10) for ops in range(0, 3001, 100)]
    assert after_warmup(short)[0].ops == 1500  # 2,000 would leave less than half
    mid = [Sample(ops, 1000, 10) for ops in range(0, 8001, 100)]
    assert after_warmup(mid)[0].ops == 2000  # 20% would be 1,600
    long = [Sample(ops, 1000, 10) for ops in range(0, 100_001, 1000)]
    assert after_warmup(long)[0].ops == 20_000


def test_fit_reports_its_doubt_and_the_runs_page_resolution() -> None:
    line = [Sample(ops, 1000 + ops // 1000, 10) for ops in range(0, 20_001, 1000)]
    d = daemon_figures(line)
    assert d["rss_slope_stderr"] == 0.0  # on the line exactly
    assert d["resolution_kb_per_10k_ops"] == 2.5  # 4 kB over 16,000 measured ops
    assert slope_stderr([0, 1, 2], [0, 1, 0]) == pytest.approx(0.577, abs=0.001)
    assert slope_stderr([0, 1], [0, 5]) == 0.0
    one_page = [Sample(ops, 1000 if ops < 15_000 else 1004, 10)
                for ops in range(0, 20_001, 1000)]
    found = failures({"pedserver": daemon_figures(one_page)})
    assert len(found) == 1 and found[0].endswith("one page is 2.5 kB per 10,000 of them)")


def test_traced_growth_is_fitted_after_the_warmup() -> None:
    points = [(ops, 500_000 + min(ops, 2000) * 100 + ops // 10) for ops in
              range(1000, 20_001, 1000)]
    t = traced_figures(points)
    assert t["bytes_per_10k_ops"] == pytest.approx(1000.0)
    assert t["points"][0] == [1000, 600_100]
    assert traced_figures([(1000, 5), (2000, 5)])["bytes_per_10k_ops"] == 0.0


def test_tracemalloc_soak_reports_what_python_holds(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    rounds = 30
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.soak", "--operations", str(rounds),
         "--tracemalloc", "--tracemalloc-every", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["traced"]) == {"pedhsm", "pedclient", "pedserver", "hsmclient"}
    for name, t in r["traced"].items():
        served = 2 if name == "pedhsm" else 1
        # a report after rounds 10, 20 and 30 (the last round: no second one at the end)
        assert [ops for ops, _ in t["points"]] == [served * n for n in (10, 20, 30)]
        assert all(_positive(held) for _, held in t["points"]), (name, t)
        assert isinstance(t["bytes_per_10k_ops"], float)
    assert "| pedserver | 3 | " in done.stdout


def test_rises_after_the_warmup_tell_a_staircase_from_a_step() -> None:
    step = [Sample(ops, 1000 if ops < 18_000 else 1012, 10) for ops in range(0, 24_001, 100)]
    assert daemon_figures(step)["rss_rises"] == [[18_000, 12]]
    stairs = [Sample(ops, 1000 + 4 * (ops // 1000), 10) for ops in range(0, 40_001, 100)]
    found = daemon_figures(stairs)["rss_rises"]
    assert len(found) == 12 and found[0] == [9000, 4]  # warm-up: the first 8,000 ops
    assert found[-1] == [40_000, 4 * (40 - 9 - 11 + 1)]  # the rest, summed
    flat = [Sample(ops, 1000, 10) for ops in range(0, 10_001, 100)]
    assert daemon_figures(flat)["rss_rises"] == []
    assert "| none | " in markdown({"rounds": 1, "seconds": 1.0, "failures": [],
                                     "latency": {}, "daemons": {"x": daemon_figures(flat)}})


def test_refit_computes_the_figures_again_from_the_kept_samples() -> None:
    grows = [[ops, 2000 + ops // 2500, 10, 0] for ops in range(0, 50_001, 1000)]
    flat = [[ops, 2000, 10, 0] for ops in range(0, 50_001, 1000)]
    old = {"rounds": 50_000, "daemons": {}, "failures": [], "latency": {},
           "samples": {"pedhsm": grows, "pedemu": flat},
           "traced": {"pedhsm": {"points": [[1000, 10], [2000, 10], [3000, 10]]}}}
    new = refit(old)
    assert new["daemons"]["pedhsm"]["rss_kb_per_10k_ops"] == pytest.approx(4.0, abs=0.1)
    assert new["daemons"]["pedemu"]["log_bytes_per_op"] is None
    assert len(new["failures"]) == 1 and new["failures"][0].startswith("pedhsm: ")
    assert new["traced"]["pedhsm"]["bytes_per_10k_ops"] == 0.0
    assert new["rounds"] == 50_000 and old["failures"] == []


def test_native_figures_are_fitted_after_the_warmup() -> None:
    points = [(ops, {"rss_anon": 20_000_000 + ops * 2, "pymalloc_arenas": 15,
                     "malloc_in_use": 7_000_000, "py_blocks": 250_000 + ops // 1000})
              for ops in range(0, 20_001, 1000)]
    f = native_figures(points)
    assert f["reports"] == 21 and f["from_ops"] == 4000
    assert f["rss_anon"] == {"first": 20_008_000, "last": 20_040_000, "per_10k_ops": 20_000.0}
    assert f["malloc_in_use"]["per_10k_ops"] == 0.0
    assert f["pymalloc_arenas"] == {"first": 15, "last": 15, "per_10k_ops": 0.0}
    assert "rss_file" not in f  # not given: left out, not guessed
    row = markdown({"rounds": 1, "seconds": 1.0, "failures": [], "latency": {}, "daemons": {},
                    "native_figures": {"pedserver": f}})
    assert "| pedserver | 21 | 19539 -> 19570 (+19.53) | - |" in row
    assert "| 15 -> 15 |" in row
    # Python's live blocks: a count, fitted (one block kept per 1,000 operations here)
    assert f["py_blocks"] == {"first": 250_004, "last": 250_020, "per_10k_ops": 10.0}
    assert "| 250004 -> 250020 (+10.0) |" in row


def test_memstats_soak_reports_where_memory_sits(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "pedtools.bench.soak", "--operations", "30", "--memstats",
         "--tracemalloc-every", "10", "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["traced"] == {}  # untraced: no tracemalloc figure
    assert set(r["native_figures"]) == {"pedhsm", "pedclient", "pedserver", "hsmclient"}
    for name, points in r["native"].items():
        served = 2 if name == "pedhsm" else 1
        assert [ops for ops, _ in points] == [served * n for n in (10, 20, 30)], name
        for _, figs in points:
            assert figs["traced_bytes"] == 0 and _positive(figs["rss_anon"]), (name, figs)
            assert _positive(figs["pymalloc_arenas"]) and _positive(figs["malloc_in_use"])
            assert _positive(figs["py_blocks"])
    assert "Below Python" in done.stdout and "| pedserver | 3 | " in done.stdout


def test_a_failure_says_where_the_growth_sits_below_python() -> None:
    grows = [Sample(ops, 2000 + ops // 2500, 10) for ops in range(0, 50_001, 1000)]
    points = [(ops, {"rss_anon": 10_000_000 + ops * 2, "rss_file": 9_000_000,
                     "malloc_heap": 7_000_000 + ops, "malloc_in_use": 6_500_000,
                     "pymalloc_allocated": 13_000_000}) for ops in range(0, 50_001, 1000)]
    native = {"pedclient": native_figures(points)}
    line = failures({"pedclient": daemon_figures(grows)}, native=native)[0]
    assert line.startswith("pedclient: RSS grows 4.0 kB per 10,000 operations")
    assert line.endswith("; below Python, kB per 10,000 operations: RssAnon +19.53, RssFile "
                         "+0.00; glibc's heap spans +9.77 and holds +0.00 in use; pymalloc "
                         "holds +0.00")
    with_blocks = [(ops, {**figs, "py_blocks": 300_000}) for ops, figs in points]
    line = failures({"pedclient": daemon_figures(grows)},
                    native={"pedclient": native_figures(with_blocks)})[0]
    assert line.endswith("pymalloc holds +0.00; Python keeps +0.0 live blocks per 10,000 "
                         "operations")
    # without --memstats, or under PYTHONMALLOC=malloc (no pymalloc figure)
    assert "below Python" not in failures({"pedclient": daemon_figures(grows)})[0]
    bare = failures({"x": daemon_figures(grows)},
                    native={"x": native_figures([(o, {k: v for k, v in f.items()
                                                      if k != "pymalloc_allocated"})
                                                 for o, f in points])})[0]
    assert bare.endswith("holds +0.00 in use")


def test_levelling_off_is_read_past_the_saw_tooth() -> None:
    """A trim every so often makes RSS a saw-tooth; settling slows down, a leak does not:
    the median of each tenth and the last half's slope tell them apart."""
    # settling: +100 kB over the first 100,000 operations, then flat; a trim drops 48 kB
    # for every fifth sample
    settling = [Sample(ops, 40_000 + min(ops, 100_000) // 1000 - (48 if ops % 5000 == 0 else 0),
                       10) for ops in range(0, 200_001, 1000)]
    d = daemon_figures(settling)
    assert d["rss_kb_per_10k_ops"] > 1.0  # the whole fit still sees the settling
    assert d["rss_kb_per_10k_ops_last_half"] == 0.0
    assert d["rss_kb_median_by_tenth"] == [40_007, 40_027, 40_047, 40_067, 40_087, 40_100,
                                           40_100, 40_100, 40_100, 40_100]
    # a leak: 3 kB per 10,000 operations, all along
    leak = [Sample(ops, 40_000 + ops * 3 // 10_000, 10) for ops in range(0, 200_001, 1000)]
    d = daemon_figures(leak)
    assert d["rss_kb_per_10k_ops_last_half"] == pytest.approx(d["rss_kb_per_10k_ops"], abs=0.1)
    assert d["rss_kb_median_by_tenth"] == [40_002, 40_008, 40_014, 40_020, 40_026, 40_032,
                                           40_038, 40_044, 40_050, 40_057]
    table = markdown({"rounds": 200_000, "seconds": 1.0, "daemons": {"pedserver": d},
                      "latency": {}, "failures": []})
    assert "| pedserver | 40002 | 40008 | 40014 |" in table, table
    assert "| 3.0 |" in table, table


def test_a_soak_stopped_by_sigterm_stops_its_daemons(tmp_path: Path) -> None:
    """``kill`` (or a CI's timeout) on a soak leaves no daemon of it running."""
    soak = subprocess.Popen(
        [sys.executable, "-m", "pedtools.bench.soak", "--operations", "1000000", "--keep",
         "--out", str(tmp_path / "soak.json")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    try:
        assert soak.stderr is not None
        said = []
        while not said or "soaking for" not in said[-1]:
            line = soak.stderr.readline()
            assert line, "".join(said)  # the soak ended before it began its rounds
            said.append(line)
        soak.send_signal(signal.SIGTERM)
        rest = soak.stderr.read()
        assert soak.wait(timeout=120) == 128 + signal.SIGTERM, rest
    finally:
        if soak.poll() is None:
            soak.kill()
    assert "stopped by SIGTERM: the daemons were stopped" in rest, rest
    work = rest.split("work directory kept: ")[1].split()[0]
    assert Path(work).is_dir()
    running = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not a process
        if work.encode() in cmdline:
            running.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    shutil.rmtree(work)
    assert running == [], running
