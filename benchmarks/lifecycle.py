"""What happened to the sent messages, read straight from the run's PostgreSQL schema.

Polling ``GET /api/messages/{id}`` would record a ``Viewed`` event per poll and distort
every figure, so the harness reads the ``messages`` read model (and the event and
job-run tables) directly, once at the end of a phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from benchmarks.stats import latency_summary

EVENTS_TABLE = "messaging_events"
DONE = "status = 'delivered' AND notified AND indexed"
STAGES = ("encrypted", "delivered", "notified", "indexed")


@dataclass(frozen=True)
class Tally:
    total: int
    done: int
    failed: int

    def settled(self, expected: int) -> bool:
        return self.done + self.failed >= expected


def tally(conn: psycopg.Connection[Any]) -> Tally:
    row = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {DONE}), "
        "count(*) FILTER (WHERE status = 'failed') FROM messages"
    ).fetchone()
    assert row is not None
    return Tally(int(row[0]), int(row[1]), int(row[2]))


def wait_settled(
    conn: psycopg.Connection[Any],
    expected: int,
    timeout: float,
    progress: Callable[[Tally], None] | None = None,
    every: float = 0.2,
) -> tuple[Tally, float]:
    """Poll until ``expected`` messages are done or failed; (tally, wall clock then)."""
    deadline = time.monotonic() + timeout
    while True:
        current = tally(conn)
        now = time.time()
        if progress is not None:
            progress(current)
        if current.settled(expected) or time.monotonic() > deadline:
            return current, now
        time.sleep(every)


def log_position(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(f"SELECT COALESCE(max(notification_id), 0) FROM {EVENTS_TABLE}").fetchone()
    return int(row[0]) if row else 0


def events_between(conn: psycopg.Connection[Any], after: int, upto: int) -> int:
    row = conn.execute(
        f"SELECT count(*) FROM {EVENTS_TABLE} WHERE notification_id > %s AND notification_id <= %s",
        (after, upto),
    ).fetchone()
    return int(row[0]) if row else 0


def jobs_between(conn: psycopg.Connection[Any], started: float, ended: float) -> dict[str, int]:
    """Completed job runs per queue that started and finished inside the window."""
    exists = conn.execute("SELECT to_regclass('job_runs')").fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(
        "SELECT queue, count(*) FROM job_runs WHERE outcome = 'completed' "
        "AND started_at >= %s AND finished_at <= %s GROUP BY queue ORDER BY queue",
        (started - 1.0, ended + 1.0),
    ).fetchall()
    return {str(queue): int(count) for queue, count in rows}


def job_durations(
    conn: psycopg.Connection[Any], started: float, ended: float
) -> dict[str, dict[str, float]]:
    """p50/p95 run time of the completed jobs of each queue inside the window, in ms.

    With a queue's concurrency, it tells how many jobs per second that queue can finish.
    """
    exists = conn.execute("SELECT to_regclass('job_runs')").fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute(
        "SELECT queue, percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY finished_at - started_at) FROM job_runs "
        "WHERE outcome = 'completed' AND started_at >= %s AND finished_at <= %s "
        "GROUP BY queue ORDER BY queue",
        (started - 1.0, ended + 1.0),
    ).fetchall()
    return {
        str(queue): {"p50Ms": round(p50 * 1000, 1), "p95Ms": round(p95 * 1000, 1)}
        for queue, p50, p95 in rows
    }


def job_outcomes(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Every job run of the schema by outcome (retries and failures show up here)."""
    exists = conn.execute("SELECT to_regclass('job_runs')").fetchone()
    if not exists or exists[0] is None:
        return {}
    rows = conn.execute("SELECT outcome, count(*) FROM job_runs GROUP BY outcome").fetchall()
    return {str(outcome): int(count) for outcome, count in rows}


def time_to_terminal(conn: psycopg.Connection[Any], ids: Iterable[str]) -> dict[str, Any]:
    """``updated_at - created_at`` of the done messages among ``ids``."""
    wanted = set(ids)
    rows = conn.execute(f"SELECT id, created_at, updated_at, ({DONE}) FROM messages").fetchall()
    seconds = [
        (updated - created).total_seconds()
        for mid, created, updated, done in rows
        if done and mid in wanted
    ]
    return {"messages": len(seconds), **latency_summary(seconds)}


def stage_latencies(events: Iterable[Any], ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Time from ``Created`` to each stage's (last) event, per message of ``ids``.

    ``events`` are decoded domain events of the notification log, in order.
    """
    wanted = set(ids)
    created: dict[str, datetime] = {}
    reached: dict[str, dict[str, datetime]] = {stage: {} for stage in STAGES}
    for event in events:
        mid = str(event.originator_id)
        if mid not in wanted:
            continue
        name = type(event).__name__.lower()
        if name == "created":
            created[mid] = event.timestamp
        elif name in reached:
            reached[name][mid] = event.timestamp  # the last batch's event wins
    result: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        seconds = [
            (when - created[mid]).total_seconds()
            for mid, when in reached[stage].items()
            if mid in created
        ]
        result[stage] = {"messages": len(seconds), **latency_summary(seconds)}
    return result
