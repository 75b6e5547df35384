"""Small statistics shared by every measurement: percentiles and rates."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` in 0..1) of unsorted values; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return ordered[min(rank, len(ordered)) - 1]


def millis(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value / floor`` rounded, or None when either side is missing."""
    if value is None or not floor:
        return None
    return round(value / floor, 3)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds."""
    return {
        "p50Ms": millis(percentile(seconds, 0.50)),
        "p95Ms": millis(percentile(seconds, 0.95)),
        "p99Ms": millis(percentile(seconds, 0.99)),
        "maxMs": millis(max(seconds) if seconds else None),
    }
