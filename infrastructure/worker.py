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
    abandoned: bool = False


class JobRunner:
    """Runs a job and decides what a failure means: a delayed retry, or a failed job."""

    def __init__(
        self,
        processor: Processor,
        delayed: DelayedJobs,
        queues: dict[str, QueueSettings],
        faults: FaultInjector,
        stats: JobStats,
    ) -> None:
        self.processor = processor
        self.delayed = delayed
        self.queues = queues
        self.faults = faults
        self.stats = stats

    def execute(self, job: Job) -> list[Job]:
        self.faults.check(job)
        return self.processor.run(job).follow_ups

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

    kombu connections are not thread-safe, so receiving, publishing follow-ups and
    acknowledging all happen here; handlers only compute and record outcomes.
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
                    producer = conn.Producer(serializer="json")
                    consumer = conn.Consumer(
                        self.broker.queues[self.settings.name],
                        callbacks=[self._received],
                        accept=["json"],
                        prefetch_count=self.settings.concurrency,
                    )
                    with consumer:
                        backoff = 0.5
                        self._loop(conn, producer)
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

    def _loop(self, conn: Any, producer: Any) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.05)
            self._settle(producer)

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
            run.follow_ups = self.runner.execute(run.job)
        except BaseException as error:
            run.error = error
        run.done.set()
        self.finished.put(run)

    def _settle(self, producer: Any) -> None:
        now = time.monotonic()
        while True:
            try:
                run = self.finished.get_nowait()
            except stdqueue.Empty:
                break
            if run.abandoned or id(run) not in self.running:
                continue
            self._complete(run, producer)
        for run in list(self.running.values()):
            if not run.done.is_set() and now - run.started > self.settings.timeout_seconds:
                run.abandoned = True
                run.error = TimeoutError(f"ran past its {self.settings.timeout_seconds:g}s timeout")
                self._complete(run, producer)

    def _complete(self, run: Running, producer: Any) -> None:
        self.running.pop(id(run), None)
        self.active = len(self.running)
        elapsed = time.monotonic() - run.started
        try:
            if run.error is None:
                for job in run.follow_ups:
                    producer.publish(
                        job.to_wire(),
                        exchange=self.broker.queues[job.queue].exchange,
                        routing_key=job.queue,
                        delivery_mode=2,
                        message_id=job.job_id,
                    )
                self.runner.stats.record(run.job, "completed", elapsed, "")
            else:
                self.runner.failed(run.job, run.error)
        except Exception:
            # The outcome could not be recorded: leave the job unacknowledged so that
            # the broker hands it out again.
            log.exception("%s: could not record the outcome of %s", self.name, run.job.job_id)
            return
        run.message.ack()


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
        for consumer in self.consumers:
            consumer.join(timeout=5)
