"""Consumers of the six queues: run jobs, record their outcomes, then acknowledge.

A broker message carries a batch of jobs of one queue (infrastructure/broker.py). The
five queues of message processing hand their batches to one ``BatchEngine`` per process,
which runs whatever has arrived, across queues, as one unit of work
(application/batches.py): one read of the messages, one event-store transaction, one
transaction for the outcomes, then every broker message of the unit is acknowledged.
``MESSAGE_CLEANUP`` (and any processor that cannot run batches) runs job by job on a
pool of ``concurrency`` threads.
"""

from __future__ import annotations

import contextlib
import logging
import queue as stdqueue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from application.batches import BatchProcessor, JobResult
from application.errors import CourierError
from application.jobs import (
    MESSAGE_CLEANUP,
    BadJobId,
    Job,
    QueueSettings,
    jobs_from_wire,
    lane_rank,
)
from application.processing import JobNotReady, Processor, UnknownJob
from infrastructure.broker import Broker, lanes_of
from infrastructure.delayed import DelayedJobs
from infrastructure.faults import FaultInjector
from infrastructure.jobruns import ACTIVE_AFTER, COMPLETED, DROPPED, FAILED, RETRIED, JobRuns
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


class QueueConsumer(threading.Thread):
    """One queue: a kombu consumer on this thread; its jobs run in units of work on the
    process's ``BatchEngine``, or (``MESSAGE_CLEANUP``) on a pool of threads.

    kombu connections are not thread-safe, so receiving and acknowledging happen here.
    A broker message is acknowledged once every job it carried has its outcome
    recorded; one with a job that could not be recorded goes back to the broker.

    On the pool, up to ``concurrency`` jobs run at once; jobs that end together have
    their outcomes recorded in one transaction; jobs still running after
    ``ACTIVE_AFTER`` are recorded as active meanwhile, together. A job still running at
    the queue's timeout is abandoned: it is recorded as a failed attempt and another
    thread takes its place in the pool. For batched queues, ``concurrency`` is the
    number of broker messages (batches) this process holds at once.
    """

    def __init__(
        self,
        settings: QueueSettings,
        broker: Broker,
        runner: JobRunner,
        engine: BatchEngine | None = None,
    ) -> None:
        super().__init__(name=f"worker-{settings.name}", daemon=True)
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.engine = engine if runner.batched(settings.name) else None
        self.stopping = threading.Event()
        self.incoming: list[Running] = []
        self.running: dict[int, Running] = {}
        self.finished: stdqueue.SimpleQueue[Running] = stdqueue.SimpleQueue()
        self.settled: stdqueue.SimpleQueue[Running] = stdqueue.SimpleQueue()
        self.tasks: stdqueue.SimpleQueue[Running | None] = stdqueue.SimpleQueue()
        self.pool_lock = threading.Lock()
        self.pool_size = 0
        self.pool_wanted = settings.concurrency
        self.active = 0
        self.connections = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        if self.engine is None:
            self._grow_pool()
        backoff = 0.5
        try:
            while not self.stopping.is_set():
                try:
                    with self.broker.connection() as conn:
                        conn.ensure_connection(max_retries=1)
                        self.broker.declare(conn)
                        consumer = conn.Consumer(
                            [self.broker.queues[lane] for lane in lanes_of(self.settings.name)],
                            callbacks=[self._received],
                            accept=["json"],
                            prefetch_count=self.settings.concurrency,
                        )
                        self.connections += 1
                        with consumer:
                            backoff = 0.5
                            if self.engine is None:
                                self._loop(conn)
                            else:
                                self._loop_batched(conn)
                except Exception as error:
                    self.incoming.clear()
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
        finally:
            with self.pool_lock:
                self.pool_wanted = 0
                threads = self.pool_size
            for _ in range(threads):
                self.tasks.put(None)

    def _loop_batched(self, conn: Any) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.02)
            requeued = False
            while True:
                try:
                    run = self.settled.get_nowait()
                except stdqueue.Empty:
                    break
                requeued |= not self._complete(run)
            if requeued:
                # Outcomes could not be recorded: give the store a moment before the next ones.
                self.stopping.wait(0.5)

    def _loop(self, conn: Any) -> None:
        ended: list[Running] = []
        while not self.stopping.is_set():
            if len(self.running) < self.settings.concurrency:
                # Short waits while jobs run, so that finished ones are acknowledged soon;
                # then take, without waiting, whatever else the broker already sent.
                wait = 0.005 if self.running else 0.05
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=wait)
                    while len(self.running) + len(self.incoming) < self.settings.concurrency:
                        conn.drain_events(timeout=0.001)
                self._start()
            else:
                # Every slot is busy: the broker will not hand out more; wait for one to end.
                with contextlib.suppress(stdqueue.Empty):
                    ended.append(self.finished.get(timeout=0.05))
            self._settle(ended)
            ended = []

    def _received(self, body: Any, message: Any) -> None:
        try:
            jobs = jobs_from_wire(body)
        except BadJobId:
            log.error("%s: dropping a malformed job body", self.name)
            message.ack()
            return
        if not jobs:
            message.ack()
            return
        delivery = Delivery(message, pending=len(jobs), connection=self.connections)
        now = time.monotonic()
        runs = [Running(job, delivery, now) for job in jobs]
        if self.engine is not None:
            self.engine.submit(self, runs)
        else:
            self.incoming.extend(runs)

    def _start(self) -> None:
        batch, self.incoming = self.incoming, []
        for run in batch:
            self.running[id(run)] = run
            self.tasks.put(run)
        self.active = len(self.running)

    def _mark_active(self) -> None:
        """Record as active, in one transaction, the jobs running for a while.

        Most jobs end sooner and are recorded once, when they end (infrastructure/
        jobruns.py); a long one shows up as active in the queue's metrics meanwhile.
        """
        now = time.monotonic()
        long_running = [
            run
            for run in self.running.values()
            if run.run_id is None and not run.done and now - run.started > ACTIVE_AFTER
        ]
        if not long_running:
            return
        try:
            run_ids = self.runner.begin([run.job for run in long_running])
        except Exception:
            log.exception("%s: could not record %d jobs as active", self.name, len(long_running))
            return
        for run, run_id in zip(long_running, run_ids, strict=True):
            run.run_id = run_id

    def _work(self) -> None:
        while True:
            run = self.tasks.get()
            if run is None:
                break
            try:
                run.follow_ups = self.runner.execute(run.job)
            except BaseException as error:
                run.error = error
            with self.pool_lock:
                run.elapsed = time.monotonic() - run.started
                run.done = True
                leave = run.abandoned or self.pool_size > self.pool_wanted
                if run.abandoned:
                    self.pool_wanted -= 1  # the thread that stood in for this one stays
            if not run.abandoned:
                self.finished.put(run)
            if leave:
                break
        with self.pool_lock:
            self.pool_size -= 1

    def _grow_pool(self) -> None:
        with self.pool_lock:
            self.pool_wanted = self.settings.concurrency
            missing = self.pool_wanted - self.pool_size
            self.pool_size += max(missing, 0)
        self._spawn(missing)

    def _spawn(self, threads: int) -> None:
        for _ in range(threads):
            threading.Thread(target=self._work, name=f"{self.name}-job", daemon=True).start()

    def _abandon_hung(self) -> list[Running]:
        """Jobs past the queue's timeout; each thread they hold is stood in for."""
        now = time.monotonic()
        timeout = self.settings.timeout_seconds
        hung: list[Running] = []
        with self.pool_lock:
            for run in self.running.values():
                if not run.done and now - run.started > timeout:
                    run.abandoned = True
                    run.error = TimeoutError(f"ran past its {timeout:g}s timeout")
                    run.elapsed = now - run.started
                    hung.append(run)
            self.pool_wanted += len(hung)
            self.pool_size += len(hung)
        self._spawn(len(hung))
        for run in hung:
            self.running.pop(id(run), None)
        return hung

    def _settle(self, ended: list[Running]) -> None:
        while True:
            try:
                ended.append(self.finished.get_nowait())
            except stdqueue.Empty:
                break
        ended = [run for run in ended if self.running.pop(id(run), None) is not None]
        self._mark_active()
        ended.extend(self._abandon_hung())
        if not ended:
            return
        try:
            self.runner.settle(ended)
        except Exception:
            log.exception("%s: could not record the outcome of %d jobs", self.name, len(ended))
        self.active = len(self.running)
        requeued = False
        for run in ended:
            requeued |= not self._complete(run)
        if requeued:
            # Outcomes could not be recorded: give the store a moment before the next ones.
            self.stopping.wait(0.5)

    def _complete(self, run: Running) -> bool:
        """Count a settled job; once its broker message has none left, acknowledge the
        message, or hand it back to the broker if a job of it could not be recorded."""
        delivery = run.delivery
        delivery.unrecorded |= not run.recorded
        delivery.pending -= 1
        if delivery.pending > 0:
            return run.recorded
        if delivery.connection != self.connections:
            # Received on a connection lost since: the broker hands the message out again
            # (its jobs find their work done). Acknowledging on the new one would fail.
            return not delivery.unrecorded
        # A failing ack or requeue means the connection is gone: it raises, and the
        # consumer reconnects (kombu would otherwise count the message as unacknowledged
        # for good, and a consumer whose prefetch is full never looks at the broker again).
        if delivery.unrecorded:
            delivery.message.requeue()
            return False
        delivery.message.ack()
        return True


@dataclass(eq=False)
class Unit:
    """The jobs the engine runs together, and how they ended."""

    runs: list[tuple[QueueConsumer, Running]]
    deadline: float
    done: threading.Event = field(default_factory=threading.Event)
    results: list[JobResult] | None = None
    abandoned: bool = False


class BatchEngine(threading.Thread):
    """Runs the batched queues' jobs of this process as units of work, one at a time.

    Whatever the consumers have received (up to ``max_jobs``) forms the next unit; it
    runs on a thread of its own while this one watches the clock. A unit still running
    at its earliest queue timeout is abandoned: each of its jobs counts a failed attempt
    (and is retried with its backoff), and a fresh thread runs the next units. Python
    runs one thread's code at a time: one unit at a time loses nothing, and every job of
    a unit shares its reads and writes.
    """

    def __init__(self, runner: JobRunner, max_jobs: int = 500) -> None:
        super().__init__(name="worker-batches", daemon=True)
        self.runner = runner
        self.max_jobs = max_jobs
        self.inbox: stdqueue.SimpleQueue[list[tuple[QueueConsumer, Running]]] = (
            stdqueue.SimpleQueue()
        )
        self.stopping = threading.Event()
        self.units: stdqueue.SimpleQueue[Unit | None] = stdqueue.SimpleQueue()
        self.backlog: list[tuple[QueueConsumer, Running]] = []  # received, not yet run
        self.unit_thread: threading.Thread | None = None

    def submit(self, consumer: QueueConsumer, runs: list[Running]) -> None:
        self.inbox.put([(consumer, run) for run in runs])

    def stop(self) -> None:
        self.stopping.set()
        self.units.put(None)

    def run(self) -> None:
        self._new_unit_thread()
        while not self.stopping.is_set():
            taken = self._next_unit()
            if not taken:
                continue
            try:
                self._run(taken)
            except Exception:
                # Whatever went wrong, the broker gets these jobs back to run again.
                log.exception("a unit of %d jobs could not be run", len(taken))
                for consumer, run in taken:
                    if not run.done:
                        run.recorded = False
                        consumer.settled.put(run)

    def _next_unit(self) -> list[tuple[QueueConsumer, Running]]:
        """The jobs of the next unit: up to ``max_jobs`` of those received, high-priority
        lanes first, then normal, then low (each in the order received); the rest wait
        for the next unit."""
        if not self.backlog:
            try:
                self.backlog = self.inbox.get(timeout=0.1)
            except stdqueue.Empty:
                return []
        while True:
            try:
                self.backlog.extend(self.inbox.get_nowait())
            except stdqueue.Empty:
                break
        if any(run.job.priority for _, run in self.backlog):
            self.backlog.sort(key=lambda taken: lane_rank(taken[1].job.priority))
        taken, self.backlog = self.backlog[: self.max_jobs], self.backlog[self.max_jobs :]
        return taken

    def _run(self, taken: list[tuple[QueueConsumer, Running]]) -> None:
        queues = self.runner.queues
        timeout = min(
            (queues[r.job.queue].timeout_seconds for _, r in taken if r.job.queue in queues),
            default=60.0,
        )
        now = time.monotonic()
        for _, run in taken:
            run.started = now
            run.started_at = time.time()
        unit = Unit(taken, now + timeout)
        self.units.put(unit)
        marked = False
        while not unit.done.wait(0.05):
            if self.stopping.is_set():
                return  # unacknowledged: the broker hands these jobs out again
            if time.monotonic() > unit.deadline:
                self._abandon(unit, timeout)
                break
            if not marked and time.monotonic() - now > ACTIVE_AFTER:
                marked = True
                self._mark_active(unit)
        self._settle(unit)

    def _work(self) -> None:
        while True:
            unit = self.units.get()
            if unit is None:
                return
            try:
                results = self.runner.execute_batch([run.job for _, run in unit.runs])
            except BaseException as error:  # a bug, or the store failing as a whole
                results = [JobResult(error=error) for _ in unit.runs]
            if unit.abandoned:
                return  # the engine has a new thread for the next units
            unit.results = results
            unit.done.set()

    def _new_unit_thread(self) -> None:
        self.unit_thread = threading.Thread(target=self._work, name="worker-unit", daemon=True)
        self.unit_thread.start()

    def _mark_active(self, unit: Unit) -> None:
        """A unit running for a while shows its jobs as active in the queue metrics."""
        try:
            run_ids = self.runner.begin([run.job for _, run in unit.runs])
        except Exception:
            log.exception("could not record %d jobs as active", len(unit.runs))
            return
        for (_, run), run_id in zip(unit.runs, run_ids, strict=True):
            run.run_id = run_id

    def _abandon(self, unit: Unit, timeout: float) -> None:
        unit.abandoned = True
        unit.results = [
            JobResult(error=TimeoutError(f"ran past its {timeout:g}s timeout")) for _ in unit.runs
        ]
        if self.runner.batches is not None:
            self.runner.batches.kept.clear()
        log.error("a unit of %d jobs ran past its %gs timeout; abandoned", len(unit.runs), timeout)
        self._new_unit_thread()

    def _settle(self, unit: Unit) -> None:
        results = unit.results or [JobResult(error=RuntimeError("no result")) for _ in unit.runs]
        now = time.monotonic()
        for (_, run), result in zip(unit.runs, results, strict=True):
            run.error = result.error
            run.follow_ups = result.follow_ups
            run.elapsed = now - run.started
            run.done = True
        runs = [run for _, run in unit.runs]
        try:
            self.runner.settle(runs)
        except Exception:
            log.exception("could not record the outcome of %d jobs", len(runs))
        for consumer, run in unit.runs:
            consumer.settled.put(run)


class Workers:
    """Every queue's consumer in this process, and the engine of the batched ones."""

    def __init__(self, consumers: list[QueueConsumer], engine: BatchEngine | None = None) -> None:
        self.consumers = consumers
        self.engine = engine

    def start(self) -> None:
        if self.engine is not None:
            self.engine.start()
        for consumer in self.consumers:
            consumer.start()

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
            consumer.runner.faults.release()
        if self.engine is not None:
            self.engine.stop()
        for consumer in self.consumers:
            consumer.join(timeout=5)
        if self.engine is not None:
            self.engine.join(timeout=5)
