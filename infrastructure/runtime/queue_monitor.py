"""Queue monitoring (docs/API.md §4.5): figures per queue, health verdicts, the failed-job list.

What the event log tells (completed, failed, throughput, latency from scheduling to
completing event, retries requested) is the `queue_metrics` projection's
(projections/queue_metrics.py). Only live state comes from elsewhere: ``waiting`` is
the broker's queue depth, ``delayed`` the rows of ``delayed_jobs``, ``active`` and the
health rules' recent attempts the ``job_runs`` that every worker process writes. The
failed-job list is the `messages` view's. Nothing here holds or shows message content.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from application.jobs import QueueSettings
from domain.timestamps import iso
from infrastructure.broker import Broker
from infrastructure.delayed import DelayedJobs
from infrastructure.jobruns import WINDOW_SECONDS, JobRuns, RunFigures
from infrastructure.settings import HealthRules
from projections.queue_metrics_queries import LogFigures, QueueMetricsSQL
from projections.tables import failed_jobs

log = logging.getLogger("courier.queues")

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
PASS, WARN, FAIL, SKIPPED = "pass", "warn", "fail", "skipped"


@dataclass(frozen=True)
class QueueFigures:
    waiting: int | None
    delayed: int
    runs: RunFigures
    log: LogFigures

    def as_dict(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "active": self.runs.active,
            "delayed": self.delayed,
            "completed": self.log.completed,
            "failed": self.log.failed,
            "retriesRequested": self.log.retries_requested,
            "throughputPerMinute": self.log.throughput_per_minute,
            "p50Ms": self.log.p50_ms,
            "p95Ms": self.log.p95_ms,
        }


class QueueMonitor:
    def __init__(
        self,
        queues: dict[str, QueueSettings],
        broker: Broker,
        delayed: DelayedJobs,
        runs: JobRuns,
        engine: Engine,
        rules: HealthRules,
    ) -> None:
        self.queues = queues
        self.broker = broker
        self.delayed = delayed
        self.runs = runs
        self.engine = engine
        self.rules = rules
        self.log = QueueMetricsSQL(engine)

    def knows(self, name: str) -> bool:
        return name in self.queues

    def _depths(self) -> dict[str, int] | None:
        try:
            return self.broker.depths(list(self.queues))
        except Exception as error:
            log.warning("queue depths unavailable: broker unreachable (%s)", type(error).__name__)
            return None

    def figures(self, now: float | None = None) -> dict[str, QueueFigures]:
        """Every queue's figures (``waiting`` is None while the broker is unreachable)."""
        now = time.time() if now is None else now
        depths = self._depths()
        delayed = self.delayed.counts()
        runs = self.runs.figures(self.queues, now)
        logged = self.log.figures(self.queues, now)
        return {
            name: QueueFigures(
                waiting=depths[name] if depths is not None else None,
                delayed=delayed.get(name, 0),
                runs=runs[name],
                log=logged[name],
            )
            for name in self.queues
        }

    def metrics(self) -> dict[str, Any]:
        return {"queues": {name: f.as_dict() for name, f in self.figures().items()}}

    def health(self, name: str, now: float | None = None) -> dict[str, Any]:
        """``healthy``, ``degraded`` or ``unhealthy``, with the checks that decided it."""
        now = time.time() if now is None else now
        rules = self.rules
        depths = self._depths()
        checks: dict[str, dict[str, Any]] = {
            "broker": {"status": PASS if depths is not None else FAIL},
        }
        waiting = depths[name] if depths is not None else None
        checks["broker"]["waiting"] = waiting
        runs: RunFigures | None
        try:
            runs = self.runs.figures({name: self.queues[name]}, now)[name]
            checks["store"] = {"status": PASS}
        except Exception as error:
            log.warning("job records unavailable (%s)", type(error).__name__)
            runs = None
            checks["store"] = {"status": FAIL}
        if runs is None or waiting is None:
            checks["progress"] = {"status": SKIPPED}
            checks["failureRate"] = {"status": SKIPPED}
        else:
            since = None if runs.last_started_at is None else round(now - runs.last_started_at, 1)
            stalled = waiting > 0 and (since is None or since > rules.stall_seconds)
            checks["progress"] = {
                "status": WARN if stalled else PASS,
                "waiting": waiting,
                "active": runs.active,
                "secondsSinceLastStart": since,
                "limitSeconds": rules.stall_seconds,
            }
            attempts = runs.finished_in_window
            rate = runs.failed_in_window / attempts if attempts else 0.0
            too_many = attempts >= rules.min_attempts and rate > rules.failure_rate
            checks["failureRate"] = {
                "status": WARN if too_many else PASS,
                "rate": round(rate, 4),
                "failedAttempts": runs.failed_in_window,
                "attempts": attempts,
                "limit": rules.failure_rate,
                "windowSeconds": WINDOW_SECONDS,
            }
        statuses = {check["status"] for check in checks.values()}
        status = UNHEALTHY if FAIL in statuses else DEGRADED if WARN in statuses else HEALTHY
        return {"queue": name, "status": status, "checks": checks}

    def failed(
        self, tenant_id: str, queue: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One tenant's failed jobs of a queue, newest first, and how many there are."""
        where = (failed_jobs.c.tenant_id == tenant_id, failed_jobs.c.queue == queue)
        with self.engine.connect() as conn:
            total = conn.execute(
                select(func.count()).select_from(failed_jobs).where(*where)
            ).scalar_one()
            rows = conn.execute(
                select(failed_jobs)
                .where(*where)
                .order_by(failed_jobs.c.failed_at.desc(), failed_jobs.c.job_id)
                .limit(limit)
                .offset(offset)
            ).all()
        items = [
            {
                "jobId": r.job_id,
                "queue": r.queue,
                "messageId": r.message_id,
                "attempts": r.attempts,
                "error": r.error,
                "failedAt": iso(r.failed_at),
            }
            for r in rows
        ]
        return items, int(total)
