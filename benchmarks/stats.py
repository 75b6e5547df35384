"""Small statistics shared by every measurement: latency summaries and rates."""

from __future__ import annotations

from collections.abc import Sequence

from domain.percentiles import percentile


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
        "p50Ms": millis(percentile(seconds, 0.50) if seconds else None),
        "p95Ms": millis(percentile(seconds, 0.95) if seconds else None),
        "p99Ms": millis(percentile(seconds, 0.99) if seconds else None),
        "maxMs": millis(max(seconds) if seconds else None),
    }
