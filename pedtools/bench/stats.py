"""Percentiles and ratios of the bench's samples (used by the run and by the p2p figures)."""

from __future__ import annotations


def percentile(samples: list[float], q: float) -> float:
    """The *q*-th percentile (nearest rank) of *samples*, rounded to 0.001."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return round(ordered[rank - 1], 3)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")
