"""Running a job, and what its outcome means: recorded, retried later, or failed.

``Delivery`` and ``Running`` are what a consumer holds of a broker message and of each
job it carried; ``JobRunner.settle`` records the outcomes of jobs that ended together in
one transaction, with their follow-ups and retries (``delayed_jobs``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from application.batches import BatchProcessor, JobResult
from application.errors import CourierError
from application.jobs import MESSAGE_CLEANUP, BadJobId, Job, QueueSettings
from application.processing import JobNotReady, Processor, UnknownJob
from infrastructure.delayed import DelayedJobs
from infrastructure.faults import FaultInjector
from infrastructure.jobruns import COMPLETED, DROPPED, FAILED, RETRIED, JobRuns
from infrastructure.jobstats import JobStats

log = logging.getLogger("courier.worker")

SAFE_MESSAGES = (CourierError, JobNotReady, UnknownJob)


def describe(error: BaseException) -> str:
    """An error as it may be stored and shown: class name, and our own wording only."""
    name = type(error).__name__
    if isinstance(error, SAFE_MESSAGES) or getattr(error, "safe_to_show", False):
        return f"{name}: {error}"[:300]
    return name


@dataclass(eq=False)
class Delivery:
    """One broker message and the jobs it carried; acknowledged once all are recorded."""

    message: Any
    pending: int = 0
    unrecorded: bool = False
    connection: int = 0  # which of the consumer's connections received it


@dataclass(eq=False)
class Running:
    """One received job: its broker message, and what running it led to."""

    job: Job
    delivery: Delivery
    started: float
    started_at: float = field(default_factory=time.time)
    run_id: str | None = None
    done: bool = False
    abandoned: bool = False
    error: BaseException | None = None
    follow_ups: list[Job] = field(default_factory=list)
    elapsed: float = 0.0
    recorded: bool = False


class JobRunner:
    """Runs a job and decides what a failure means: a delayed retry, or a failed job."""

    def __init__(
        self,
        processor: Processor,
        delayed: DelayedJobs,
        queues: dict[str, QueueSettings],
        faults: FaultInjector,
        stats: JobStats,
        runs: JobRuns | None = None,
        batches: BatchProcessor | None = None,
    ) -> None:
        self.processor = processor
        self.delayed = delayed
        self.queues = queues
        self.faults = faults
        self.stats = stats
        self.runs = runs
        self.batches = batches

    def batched(self, queue: str) -> bool:
        """Whether this queue's jobs run in units of work (else one by one on a pool)."""
        return self.batches is not None and queue != MESSAGE_CLEANUP

    def begin(self, jobs: list[Job]) -> list[str | None]:
        """Record that these attempts start (they then count as active); their run ids."""
        if self.runs is None:
            return [None] * len(jobs)
        return list(self.runs.start_many(jobs))

    def execute(self, job: Job) -> list[Job]:
        self.faults.check(job)
        return self.processor.run(job).follow_ups

    def execute_batch(self, jobs: list[Job]) -> list[JobResult]:
        assert self.batches is not None
        return self.batches.run(jobs, check=self.faults.check)

    def settle(self, ended: list[Running]) -> None:
        """Record the outcomes of ``ended`` in one transaction; mark those recorded.

        Follow-up jobs and retries go to the delayed-jobs table in the same transaction
        (follow-ups due at once): the relay is the only publisher, and a crash before
        they are published loses none. A job whose last attempt failed then records
        ``ProcessingFailed`` on its message; if that cannot be stored, the job is left
        unrecorded (and so handed back to the broker, to fail once more).
        """
        finished: list[tuple[str, str, BaseException | None]] = []
        whole: list[tuple[Job, float, str, BaseException | None]] = []
        scheduled: list[tuple[Job, float]] = []
        decided: list[tuple[Running, str, str]] = []
        for run in ended:
            outcome, schedule, reason = self._decide(run)
            if run.run_id is not None:
                finished.append((run.run_id, outcome, run.error))
            else:
                whole.append((run.job, run.started_at, outcome, run.error))
            scheduled.extend(schedule)
            decided.append((run, outcome, reason))
        with self.delayed.engine.begin() as conn:
            if self.runs is not None:
                self.runs.finish_in(conn, finished)
                self.runs.record_in(conn, whole)
            self.delayed.schedule_in(conn, scheduled)
        for run, outcome, reason in decided:
            if outcome == FAILED:
                try:
                    record = self.batches or self.processor
                    record.record_failure(run.job, run.job.attempt, reason)
                except Exception:
                    log.exception("could not record the failure of %s", run.job.job_id)
                    continue
            run.recorded = True
            self.stats.record(run.job, outcome, run.elapsed, reason)

    def _decide(self, run: Running) -> tuple[str, list[tuple[Job, float]], str]:
        """The attempt's outcome, what to schedule after it, and the reason to show."""
        job, error = run.job, run.error
        if error is None:
            return COMPLETED, [(f, 0.0) for f in run.follow_ups], ""
        reason = describe(error)
        if isinstance(error, UnknownJob | BadJobId) or job.queue not in self.queues:
            log.error("dropping job %s: %s", job.job_id, reason)
            return DROPPED, [], reason
        settings = self.queues[job.queue]
        if job.attempt < settings.max_attempts:
            delay = settings.delay_before(job.attempt + 1)
            log.warning(
                "job %s attempt %d/%d failed (%s); retrying in %.1fs",
                job.job_id,
                job.attempt,
                settings.max_attempts,
                reason,
                delay,
            )
            return RETRIED, [(job.next_attempt(), delay)], reason
        log.error("job %s failed after %d attempts: %s", job.job_id, job.attempt, reason)
        return FAILED, [], reason
