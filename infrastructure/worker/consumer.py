"""One queue's kombu consumer: receives batches of jobs, runs them, acknowledges them."""

from __future__ import annotations

import contextlib
import logging
import queue as stdqueue
import threading
import time
from typing import TYPE_CHECKING, Any

from application.jobs import BadJobId, QueueSettings, jobs_from_wire
from infrastructure.broker import Broker, lanes_of
from infrastructure.jobruns import ACTIVE_AFTER
from infrastructure.worker.runner import Delivery, JobRunner, Running

if TYPE_CHECKING:
    from infrastructure.worker.engine import BatchEngine

log = logging.getLogger("courier.worker")


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
