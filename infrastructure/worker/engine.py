"""The batched queues' jobs of a process, run as units of work (application/batches.py)."""

from __future__ import annotations

import logging
import queue as stdqueue
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from application.batches import JobResult
from application.jobs import lane_rank
from infrastructure.jobruns import ACTIVE_AFTER
from infrastructure.worker.runner import JobRunner, Running

log = logging.getLogger("courier.worker")


class QueueConsumer(Protocol):
    """What the engine needs of the consumer that received a job: where to hand it back
    once its outcome is recorded (``infrastructure.worker.consumer.QueueConsumer``)."""

    @property
    def settled(self) -> stdqueue.SimpleQueue[Running]: ...


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
