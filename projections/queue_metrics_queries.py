"""The `queue_metrics` view's answers (its writer is ``projections.queue_metrics``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select

from domain.percentiles import percentile
from projections.tables import queue_metric_jobs, queue_metric_totals

THROUGHPUT_SECONDS = 60.0
LATENCY_SECONDS = 300.0
LATENCY_SAMPLE = 5000  # the most recent completions a percentile is taken over
OPEN_HORIZON = 86400.0  # jobs scheduled longer ago than this no longer count as waiting


@dataclass(frozen=True)
class LogFigures:
    """What the event log says about one queue."""

    completed: int = 0
    failed: int = 0
    retries_requested: int = 0
    throughput_per_minute: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None


class QueueMetricsSQL:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def figures(self, queues: Iterable[str], now: float | None = None) -> dict[str, LogFigures]:
        """Per queue: totals, jobs completed in the last minute, and the p50/p95 of the
        time from scheduling to completing event of jobs completed in the last 5 minutes
        (``now``: Unix seconds; the figures depend on nothing else)."""
        now = time.time() if now is None else now
        names = list(queues)
        jobs = queue_metric_jobs.c
        with self.engine.connect() as conn:
            # The tables in the order a replay's swap locks them (projections/catalog.py),
            # so that a read under way and a swap wait for each other, never deadlock.
            throughput = {
                str(queue): int(count)
                for queue, count in conn.execute(
                    select(jobs.queue, func.count())
                    .where(jobs.queue.in_(names), jobs.completed_at >= now - THROUGHPUT_SECONDS)
                    .group_by(jobs.queue)
                )
            }
            latencies = {
                name: sorted(
                    float(value)
                    for value in conn.execute(
                        select(jobs.latency_ms)
                        .where(jobs.queue == name, jobs.completed_at >= now - LATENCY_SECONDS)
                        .order_by(jobs.completed_at.desc())
                        .limit(LATENCY_SAMPLE)
                    ).scalars()
                )
                for name in names
            }
            totals = {row.queue: row for row in conn.execute(select(queue_metric_totals))}
        result: dict[str, LogFigures] = {}
        for name in names:
            total = totals.get(name)
            values = latencies[name]
            result[name] = LogFigures(
                completed=int(total.completed) if total is not None else 0,
                failed=int(total.failed) if total is not None else 0,
                retries_requested=int(total.retries_requested) if total is not None else 0,
                throughput_per_minute=throughput.get(name, 0),
                p50_ms=round(percentile(values, 0.50), 1) if values else None,
                p95_ms=round(percentile(values, 0.95), 1) if values else None,
            )
        return result

    def prune(self, completed_before: float) -> int:
        """Forget the rows of jobs completed before ``completed_before`` (Unix seconds):
        no figure reads them again (throughput and latency look at the last minutes, the
        totals live in ``queue_metric_totals``), and a replay makes them again."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(queue_metric_jobs).where(queue_metric_jobs.c.completed_at < completed_before)
            )
        return int(result.rowcount or 0)

    def oldest_open(
        self, queues: Iterable[str], now: float | None = None, horizon: float = OPEN_HORIZON
    ) -> dict[str, float]:
        """Per queue, the age in seconds of the oldest job the log scheduled and no event
        has completed or failed yet, among those scheduled within ``horizon`` seconds
        (a job that ends without an event of its own, e.g. of a message shredded before
        it ran, would otherwise age for ever); 0 for a queue with none."""
        now = time.time() if now is None else now
        names = list(queues)
        jobs = queue_metric_jobs.c
        with self.engine.connect() as conn:
            oldest = {
                str(queue): float(at)
                for queue, at in conn.execute(
                    select(jobs.queue, func.min(jobs.scheduled_at))
                    .where(
                        jobs.queue.in_(names),
                        jobs.completed_at.is_(None),
                        jobs.failed.is_(False),
                        jobs.scheduled_at >= now - horizon,
                    )
                    .group_by(jobs.queue)
                )
            }
        return {name: max(0.0, now - oldest[name]) if name in oldest else 0.0 for name in names}
