"""Consumers of the six queues: run a job, record its outcome, then acknowledge."""

from __future__ import annotations

import contextlib
import logging
import queue as stdqueue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from application.errors import CourierError
from application.jobs import BadJobId, Job, QueueSettings
from application.processing import JobNotReady, Processor, UnknownJob
from infrastructure.broker import Broker
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


@dataclass
class Running:
    job: Job
    message: Any
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    follow_ups: list[Job] = field(default_factory=list)
    run_id: str | None = None
    recorded: bool = False
    claimed: bool = False
    claim_lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True for the first caller only: the job's thread, or the timeout, records it."""
        with self.claim_lock:
            if self.claimed:
                return False
            self.claimed = True
            return True


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
    ) -> None:
        self.processor = processor
        self.delayed = delayed
        self.queues = queues
        self.faults = faults
        self.stats = stats
        self.runs = runs

    def begin(self, job: Job) -> str | None:
        """Record that an attempt starts (it then counts as active); its run id."""
        return self.runs.start(job) if self.runs is not None else None

    def execute(self, job: Job) -> list[Job]:
        self.faults.check(job)
        return self.processor.run(job).follow_ups

    def settle(
        self,
        job: Job,
        run_id: str | None,
        elapsed: float,
        error: BaseException | None,
        follow_ups: list[Job],
    ) -> None:
        """Record an attempt's outcome; raises when it could not be recorded.

        Follow-up jobs go to the delayed-jobs table, due at once: the relay is the only
        publisher, and a crash before they are published loses none.
        """
        if error is None:
            self._finish(run_id, COMPLETED, None)
            self.delayed.schedule_many(follow_ups)
            self.stats.record(job, "completed", elapsed, "")
            return
        if isinstance(error, UnknownJob | BadJobId) or job.queue not in self.queues:
            self._finish(run_id, DROPPED, error)
        elif job.attempt < self.queues[job.queue].max_attempts:
            self._finish(run_id, RETRIED, error)
        else:
            self._finish(run_id, FAILED, error)
        self.failed(job, error)

    def _finish(self, run_id: str | None, outcome: str, error: BaseException | None) -> None:
        if self.runs is not None and run_id is not None:
            self.runs.finish(run_id, outcome, error)

    def failed(self, job: Job, error: BaseException) -> None:
        reason = describe(error)
        if isinstance(error, UnknownJob | BadJobId) or job.queue not in self.queues:
            log.error("dropping job %s: %s", job.job_id, reason)
            return
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
            self.delayed.schedule(job.next_attempt(), delay)
            self.stats.record(job, "retried", 0.0, reason)
            return
        log.error("job %s failed after %d attempts: %s", job.job_id, job.attempt, reason)
        self.processor.record_failure(job, job.attempt, reason)
        self.stats.record(job, "failed", 0.0, reason)


class QueueConsumer(threading.Thread):
    """One queue: a kombu consumer on this thread, each job on a thread of its own.

    kombu connections are not thread-safe, so receiving and acknowledging happen here;
    a job's thread runs it and records its outcome. A job still running at the queue's
    timeout is abandoned: this thread records it as a failed attempt and acknowledges.
    Up to ``concurrency`` jobs of the queue run at once (the consumer's prefetch).
    """

    def __init__(self, settings: QueueSettings, broker: Broker, runner: JobRunner) -> None:
        super().__init__(name=f"worker-{settings.name}", daemon=True)
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.stopping = threading.Event()
        self.running: dict[int, Running] = {}
        self.finished: stdqueue.SimpleQueue[Running] = stdqueue.SimpleQueue()
        self.active = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                with self.broker.connection() as conn:
                    conn.ensure_connection(max_retries=1)
                    self.broker.declare(conn)
                    consumer = conn.Consumer(
                        self.broker.queues[self.settings.name],
                        callbacks=[self._received],
                        accept=["json"],
                        prefetch_count=self.settings.concurrency,
                    )
                    with consumer:
                        backoff = 0.5
                        self._loop(conn)
            except Exception as error:
                self.running.clear()
                if self.stopping.is_set():
                    break
                log.warning(
                    "%s lost the broker (%s); reconnecting in %.1fs",
                    self.name,
                    type(error).__name__,
                    backoff,
                )
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _loop(self, conn: Any) -> None:
        while not self.stopping.is_set():
            if len(self.running) < self.settings.concurrency:
                # Short waits while jobs run, so that finished ones are acknowledged soon.
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.01 if self.running else 0.05)
            else:
                # Every slot is busy: the broker will not hand out more; wait for one to end.
                with contextlib.suppress(stdqueue.Empty):
                    run = self.finished.get(timeout=0.05)
                    if id(run) in self.running:
                        self._complete(run)
            self._settle()

    def _received(self, body: Any, message: Any) -> None:
        try:
            job = Job.from_wire(body if isinstance(body, dict) else {})
        except BadJobId:
            log.error("%s: dropping a malformed job body", self.name)
            message.ack()
            return
        run = Running(job, message, time.monotonic())
        self.running[id(run)] = run
        self.active = len(self.running)
        threading.Thread(target=self._execute, args=(run,), daemon=True).start()

    def _execute(self, run: Running) -> None:
        try:
            run.run_id = self.runner.begin(run.job)
            try:
                run.follow_ups = self.runner.execute(run.job)
            except BaseException as error:
                run.error = error
            if run.claim():
                elapsed = time.monotonic() - run.started
                self.runner.settle(run.job, run.run_id, elapsed, run.error, run.follow_ups)
                run.recorded = True
        except Exception:
            log.exception("%s: could not record the outcome of %s", self.name, run.job.job_id)
        run.done.set()
        self.finished.put(run)

    def _settle(self) -> None:
        now = time.monotonic()
        while True:
            try:
                run = self.finished.get_nowait()
            except stdqueue.Empty:
                break
            if id(run) in self.running:
                self._complete(run)
        timeout = self.settings.timeout_seconds
        for run in list(self.running.values()):
            if not run.done.is_set() and now - run.started > timeout and run.claim():
                error = TimeoutError(f"ran past its {timeout:g}s timeout")
                try:
                    self.runner.settle(run.job, run.run_id, now - run.started, error, [])
                    run.recorded = True
                except Exception:
                    log.exception(
                        "%s: could not record the timeout of %s", self.name, run.job.job_id
                    )
                self._complete(run)

    def _complete(self, run: Running) -> None:
        self.running.pop(id(run), None)
        self.active = len(self.running)
        if run.recorded:
            run.message.ack()
            return
        # The outcome could not be recorded: hand the job back to the broker, and give
        # the store a moment before the next one.
        with contextlib.suppress(Exception):
            run.message.requeue()
        self.stopping.wait(0.5)


class Workers:
    """Every queue's consumer in this process."""

    def __init__(self, consumers: list[QueueConsumer]) -> None:
        self.consumers = consumers

    def start(self) -> None:
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
            consumer.runner.faults.release()
        for consumer in self.consumers:
            consumer.join(timeout=5)
