"""Job runs: one durable row per attempt, written by whichever worker process ran it.

An attempt that ends within ``ACTIVE_AFTER`` seconds is written once, with its
outcome, before the broker message is acknowledged; one that runs longer is first
inserted as ``active`` and updated with its outcome when it ends. What the event log
cannot tell is read from these rows, across every worker process: the jobs running now
(``active``), when a queue last started one, and the failure rate of recent attempts
(the health rules). Completed, failed, throughput and latency are the `queue_metrics`
projection's (projections/queue_metrics.py). A row left ``active`` by a worker that
died counts as active only until the queue's timeout has passed. Rows hold ids, times
and an error class: never message content.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ARRAY, Connection, Engine, String, bindparam, delete, func, select, update

from application.jobs import Job, QueueSettings
from infrastructure.storage.bulk import append_rows
from infrastructure.tables import job_runs

ACTIVE = "active"
COMPLETED = "completed"
RETRIED = "retried"  # a failed attempt, with another one scheduled
FAILED = "failed"  # the last attempt failed: the job is in the failed list
DROPPED = "dropped"  # a job this service cannot run (malformed, unknown)
FAILED_ATTEMPT = (RETRIED, FAILED)

ACTIVE_AFTER = 1.0  # seconds an attempt runs before it is recorded (and counted) as active
WINDOW_SECONDS = 300.0  # failure rate

# How each run of a unit ended, in one statement (PostgreSQL).
_ENDED = (
    func.unnest(
        bindparam("ids", type_=ARRAY(String)),
        bindparam("outcomes", type_=ARRAY(String)),
        bindparam("errors", type_=ARRAY(String)),
    )
    .table_valued("run_id", "outcome", "error")
    .render_derived(name="ended")
)
_FINISH = (
    update(job_runs)
    .where(job_runs.c.run_id == _ENDED.c.run_id)
    .values(finished_at=bindparam("now"), outcome=_ENDED.c.outcome, error=_ENDED.c.error)
)


def _error_name(error: BaseException | None) -> str | None:
    """What a run's record keeps of its error: the class only, never the text."""
    return type(error).__name__[:120] if error is not None else None


@dataclass(frozen=True)
class RunFigures:
    """What the job runs say about one queue now."""

    active: int = 0
    finished_in_window: int = 0
    failed_in_window: int = 0
    last_started_at: float | None = None


@dataclass(frozen=True)
class Run:
    job_id: str
    queue: str
    attempt: int
    started_at: float
    finished_at: float | None
    outcome: str
    error: str | None


class JobRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def start(self, job: Job) -> str:
        """Record that an attempt of ``job`` started here; its run id."""
        return self.start_many([job])[0]

    def start_many(self, jobs: Sequence[Job]) -> list[str]:
        """Record, in one transaction, that these attempts started; their run ids."""
        now = time.time()
        rows = [
            {
                "run_id": uuid.uuid4().hex,
                "job_id": job.job_id,
                "queue": job.queue,
                "attempt": job.attempt,
                "started_at": now,
                "outcome": ACTIVE,
            }
            for job in jobs
        ]
        if rows:
            with self.engine.begin() as conn:
                append_rows(conn, job_runs, rows)
        return [str(row["run_id"]) for row in rows]

    def finish(self, run_id: str, outcome: str, error: BaseException | None = None) -> None:
        """Record how the attempt ended (the error's class only, never its text)."""
        with self.engine.begin() as conn:
            self.finish_in(conn, [(run_id, outcome, error)])

    def finish_in(
        self, conn: Connection, ended: Sequence[tuple[str, str, BaseException | None]]
    ) -> None:
        """Record how each ``(run_id, outcome, error)`` ended, in the caller's transaction."""
        if not ended:
            return
        now = time.time()
        if conn.dialect.name == "postgresql":
            # One statement for the whole unit (an executemany was one UPDATE a row).
            conn.execute(
                _FINISH,
                {
                    "now": now,
                    "ids": [run_id for run_id, _, _ in ended],
                    "outcomes": [outcome for _, outcome, _ in ended],
                    "errors": [_error_name(error) for _, _, error in ended],
                },
            )
            return
        conn.execute(
            update(job_runs)
            .where(job_runs.c.run_id == bindparam("b_run_id"))
            .values(
                finished_at=now,
                outcome=bindparam("b_outcome"),
                error=bindparam("b_error"),
            ),
            [
                {
                    "b_run_id": run_id,
                    "b_outcome": outcome,
                    "b_error": _error_name(error),
                }
                for run_id, outcome, error in ended
            ],
        )

    def record_in(
        self,
        conn: Connection,
        ended: Sequence[tuple[Job, float, str, BaseException | None]],
    ) -> None:
        """Record whole attempts ``(job, started_at, outcome, error)`` that have just
        ended, never recorded as started, in the caller's transaction."""
        if not ended:
            return
        now = time.time()
        # COPY on PostgreSQL: a unit records hundreds of runs, and SQLAlchemy's
        # executemany builds each row's parameters in Python.
        append_rows(
            conn,
            job_runs,
            [
                {
                    "run_id": uuid.uuid4().hex,
                    "job_id": job.job_id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "started_at": started_at,
                    "finished_at": now,
                    "outcome": outcome,
                    "error": _error_name(error),
                }
                for job, started_at, outcome, error in ended
            ],
        )

    def of_job(self, job_id: str) -> list[Run]:
        """Every recorded attempt of one job, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(job_runs).where(job_runs.c.job_id == job_id).order_by(job_runs.c.started_at)
            ).all()
        return [
            Run(r.job_id, r.queue, r.attempt, r.started_at, r.finished_at, r.outcome, r.error)
            for r in rows
        ]

    def prune(self, older_than_seconds: float) -> int:
        """Forget runs that ended (or started, if never ended) that long ago."""
        cutoff = time.time() - older_than_seconds
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(job_runs).where(
                    func.coalesce(job_runs.c.finished_at, job_runs.c.started_at) < cutoff
                )
            )
        return int(result.rowcount or 0)

    def figures(
        self, queues: dict[str, QueueSettings], now: float | None = None
    ) -> dict[str, RunFigures]:
        """Active runs, the last start, and recent finished and failed attempts, per queue."""
        now = time.time() if now is None else now
        window = now - WINDOW_SECONDS
        longest = max((q.timeout_seconds for q in queues.values()), default=0.0)
        acc: dict[str, dict[str, int]] = {
            name: {"active": 0, "finished": 0, "failed": 0} for name in queues
        }
        last_started: dict[str, float] = {}
        c = job_runs.c
        with self.engine.connect() as conn:
            for queue, started in conn.execute(
                select(c.queue, c.started_at).where(
                    c.outcome == ACTIVE, c.started_at > now - longest
                )
            ):
                if queue in queues and started > now - queues[queue].timeout_seconds:
                    acc[queue]["active"] += 1
            for queue, outcome, count in conn.execute(
                select(c.queue, c.outcome, func.count())
                .where(c.finished_at >= window, c.outcome.in_([COMPLETED, *FAILED_ATTEMPT]))
                .group_by(c.queue, c.outcome)
            ):
                if queue in acc:
                    acc[queue]["finished"] += int(count)
                    if outcome in FAILED_ATTEMPT:
                        acc[queue]["failed"] += int(count)
            for queue, started in conn.execute(
                select(c.queue, func.max(c.started_at)).group_by(c.queue)
            ):
                if queue in queues and started is not None:
                    last_started[queue] = float(started)
        return {
            name: RunFigures(
                active=a["active"],
                finished_in_window=a["finished"],
                failed_in_window=a["failed"],
                last_started_at=last_started.get(name),
            )
            for name, a in acc.items()
        }
