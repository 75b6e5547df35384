"""Floors merged over their runs, and every W1 figure as a ratio to its floor."""

from __future__ import annotations

from typing import Any

from benchmarks.stats import ratio

FLOOR_FIGURES = {
    "postgresInsert": ("txPerS",),
    "kombu": ("publishPerS", "consumeAckPerS", "roundTripPerS"),
    "starlette": ("throughputPerS", "p50Ms", "p95Ms", "p99Ms"),
}


def merge_floors(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """Each floor's figures as the mean of its runs (before and after W1; all kept)."""
    merged: dict[str, Any] = {}
    for name, keys in FLOOR_FIGURES.items():
        runs = [m[name] for m in measured]
        merged[name] = {**runs[-1], "runs": runs}
        for key in keys:
            values = [r[key] for r in runs if r.get(key) is not None]
            merged[name][key] = round(sum(values) / len(values), 1) if values else None
    return merged


def ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Every figure against the floor that bounds it (1.0 = as fast as the floor)."""
    w = result["w1"]
    f = result["floors"]
    starlette = f["starlette"]["throughputPerS"]
    pg = f["postgresInsert"]["txPerS"]
    kombu = f["kombu"]["roundTripPerS"]
    log_rate = f["notificationLog"]["eventsPerS"]
    events_per_message = w["events"]["perMessage"] or 0
    jobs_per_message = w["jobs"]["perMessage"] or 0
    bounds = {
        "starlette": starlette,
        "postgres": pg / events_per_message if events_per_message else None,
        "kombu": kombu / jobs_per_message if jobs_per_message else None,
    }
    known = {k: v for k, v in bounds.items() if v}
    tightest = min(known, key=lambda k: known[k]) if known else None
    lifecycle_floor = known[tightest] if tightest else None
    return {
        "acceptanceVsStarlette": ratio(w["acceptance"]["throughputPerS"], starlette),
        "eventsVsPostgresInsertTx": ratio(w["events"]["perS"], pg),
        "jobsVsKombuRoundTrip": ratio(w["jobs"]["perS"], kombu),
        "eventsVsLogDecode": ratio(w["events"]["perS"], log_rate),
        "lifecycleFloorPerS": round(lifecycle_floor, 1) if lifecycle_floor else None,
        "lifecycleFloorFrom": tightest,
        "lifecycleVsFloor": ratio(w["lifecycle"]["throughputPerS"], lifecycle_floor),
    }
