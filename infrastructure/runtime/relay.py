"""The relay: follows the event log and publishes the jobs each event's policy asks for.

It is the only publisher of first jobs. Its position is stored after the jobs are
published, so a crash re-publishes at most one batch; job ids are deterministic and
workers idempotent, so that costs nothing. Also here: due retries and the reconciler.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, func, select, text, tuple_

from application.jobs import QUEUES, Job
from application.messaging import Messaging
from application.policies import dropped_jobs, held_jobs, jobs_for, pending_jobs
from application.retention import cleanup_job
from infrastructure.broker import Broker
from infrastructure.delayed import DelayedJobs
from infrastructure.follower import LogFollower
from infrastructure.storage.eventlog import EventLog, Positioned
from infrastructure.storage.positions import read_position, write_position
from projections.tables import messages

log = logging.getLogger("courier.relay")

RELAY = "relay"


def lock_key(purpose: str, schema: str | None) -> int:
    """An advisory-lock key per purpose and schema: deployments sharing a database differ."""
    return zlib.crc32(f"courier:{purpose}:{schema or 'public'}".encode())


DUE_INTERVAL = 0.1  # seconds between looks at the delayed-jobs table
DUE_BATCH = 500
RECONCILE_BATCH = 200
PRUNE_INTERVAL = 3600.0  # seconds between prunings of old job records


class LeaderLock:
    """On Postgres, exactly one relay leads: the holder of an advisory lock."""

    def __init__(self, engine: Engine, schema: str | None = None) -> None:
        self.engine = engine
        self.key = lock_key("relay", schema)
        self.conn: Any = None

    def acquire(self, stopping: threading.Event) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True
        announced = False
        while not stopping.is_set():
            try:
                conn = self.engine.connect()
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}
                ).scalar()
                if got:
                    conn.commit()
                    self.conn = conn
                    log.info("relay is the leader")
                    return True
                conn.close()
            except Exception as error:
                log.warning(
                    "relay cannot reach the database for leadership (%s)", type(error).__name__
                )
            if not announced:
                log.info("another relay leads; standing by")
                announced = True
            stopping.wait(1.0)
        return False

    def still_held(self) -> bool:
        if self.conn is None:
            return True
        try:
            self.conn.execute(text("SELECT 1"))
            self.conn.commit()
            return True
        except Exception:
            return False

    def release(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                conn.close()


class Relay(threading.Thread):
    """Leads (or waits to), then follows the log, publishes due retries, reconciles."""

    def __init__(
        self,
        app: Messaging,
        log_: EventLog,
        engine: Engine,
        broker: Broker,
        delayed: DelayedJobs,
        *,
        poll_interval: float = 0.05,
        reconcile_after: float = 60.0,
        prune: Callable[[], int] | None = None,
        schema: str | None = None,
        cleanup_every: float = 0.0,
    ) -> None:
        super().__init__(name="relay", daemon=True)
        self.app = app
        self.engine = engine
        self.broker = broker
        self.delayed = delayed
        self.reconcile_after = reconcile_after
        self.prune = prune
        self.cleanup_every = cleanup_every
        self.cleanup_part = ""
        self.stopping = threading.Event()
        self.lock = LeaderLock(engine, schema)
        self.log_ = log_
        self.poll_interval = poll_interval
        self.follower = self._new_follower()
        self.published = 0
        self.reconcile_cursor: tuple[datetime, str] | None = None
        self.republished: dict[str, float] = {}  # job id -> when (monotonic)

    def _new_follower(self) -> LogFollower:
        return LogFollower(
            RELAY,
            self.log_,
            self.publish_batch,
            self.stored_position,
            batch_size=500,
            poll_interval=self.poll_interval,
        )

    def stored_position(self) -> int:
        with self.engine.connect() as conn:
            return read_position(conn, RELAY)

    def publish_batch(self, batch: Sequence[Positioned]) -> None:
        jobs = [job for _, event in batch if event is not None for job in jobs_for(event)]
        self.broker.publish(jobs)
        held: list[tuple[Job, float]] = []
        dropped: list[str] = []
        for _, event in batch:
            scheduled = held_jobs(event)
            if scheduled is not None:
                due, first = scheduled
                held.extend((job, due.timestamp()) for job in first)
            dropped.extend(dropped_jobs(event))
        with self.engine.begin() as conn:
            # A scheduled send's first jobs wait in the delayed jobs until due, stored
            # with the position: a restart holds them once, and publishes them once due.
            self.delayed.hold_in(conn, held)
            self.delayed.drop_in(conn, dropped)
            write_position(conn, RELAY, batch[-1][0])
        self.published += len(jobs)

    def wake(self, position: int = 0) -> None:
        self.follower.wake(position)

    def stop(self) -> None:
        self.stopping.set()
        self.follower.stop()

    def run(self) -> None:
        # Leadership is lost when the lock's connection is (PostgreSQL restarted, the
        # network cut): the relay then stands down and contends again, in this process.
        while self.lock.acquire(self.stopping):
            self.lead()
            self.lock.release()
            if self.stopping.is_set():
                return
            log.error("relay lost its leadership; contending for it again")
            self.follower.join(timeout=30)
            self.follower = self._new_follower()

    def lead(self) -> None:
        """Follow the log and keep house until leadership is lost or the relay stops."""
        self.follower.start()
        last_reconcile = last_prune = time.monotonic()
        while not self.stopping.wait(DUE_INTERVAL):
            if not self.lock.still_held():
                break
            try:
                self.publish_due()
                if time.monotonic() - last_reconcile > min(self.reconcile_after / 2, 10.0):
                    self.reconcile()
                    last_reconcile = time.monotonic()
                if self.prune is not None and time.monotonic() - last_prune > PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    self.prune()
                self.publish_cleanup()
            except Exception:
                log.exception("relay housekeeping failed; will try again")
        self.follower.stop()

    def publish_cleanup(self) -> None:
        """Once per ``cleanup_every`` seconds, the retention job (MESSAGE_CLEANUP)."""
        if self.cleanup_every <= 0:
            return
        job = cleanup_job(datetime.now(UTC), int(self.cleanup_every))
        if job.part != self.cleanup_part:  # its id names the period: a repeat is harmless
            self.broker.publish([job])
            self.cleanup_part = job.part

    def publish_due(self) -> int:
        """Publish retries whose backoff is over and follow-ups that workers handed over."""
        total = 0
        while not self.stopping.is_set():
            due = self.delayed.due(DUE_BATCH)
            if not due:
                break
            self.broker.publish([job for job, _ in due])
            self.delayed.remove(due)
            total += len(due)
            if len(due) < DUE_BATCH:
                break
        return total

    def reconcile(self) -> int:
        """Publish again the next jobs of messages that stand still short of done.

        Walks the candidates in (updated_at, id) order across calls, so that messages
        with a retry pending cannot hide the others from it.
        """
        today = datetime.now(UTC)
        cutoff = today - timedelta(seconds=self.reconcile_after)
        length = (
            func.jsonb_array_length
            if self.engine.dialect.name == "postgresql"
            else (func.json_array_length)
        )
        query = select(messages.c.id, messages.c.tenant_id, messages.c.updated_at).where(
            messages.c.updated_at < cutoff,
            length(messages.c.failures) == 0,
            messages.c.status != "cancelled",
            # A scheduled send stands still until due: its jobs wait in the delayed jobs.
            messages.c.send_at.is_(None) | (messages.c.send_at < cutoff),
            (messages.c.status != "delivered")
            | ((messages.c.notify.is_(True)) & messages.c.notified.is_(False))
            | (messages.c.index_requested.is_(True) & messages.c.indexed.is_(False)),
        )
        if self.reconcile_cursor is not None:
            query = query.where(
                tuple_(messages.c.updated_at, messages.c.id) > tuple_(*self.reconcile_cursor)
            )
        with self.engine.connect() as conn:
            rows = conn.execute(
                query.order_by(messages.c.updated_at, messages.c.id).limit(RECONCILE_BATCH)
            ).all()
        self.reconcile_cursor = (
            (rows[-1].updated_at, rows[-1].id) if len(rows) == RECONCILE_BATCH else None
        )
        waiting = self.delayed.waiting_ids()
        busy = self._busy_queues()
        now = time.monotonic()
        self.republished = {
            job_id: at for job_id, at in self.republished.items() if now - at < self.reconcile_after
        }
        jobs: list[Job] = []
        for row in rows:
            message = self.app.get_message(row.tenant_id, UUID(row.id))
            jobs.extend(
                j
                for j in pending_jobs(message, today)
                if j.job_id not in waiting
                and j.queue not in busy
                and j.job_id not in self.republished
            )
        if jobs:
            log.info("reconciler re-published %d job(s) of messages standing still", len(jobs))
            self.broker.publish(jobs)
            self.republished.update(dict.fromkeys((j.job_id for j in jobs), now))
        return len(jobs)

    def _busy_queues(self) -> set[str]:
        """Queues with jobs waiting: a job may be among them, not lost; look again later.

        A queue that lost its jobs is empty once its workers catch up, and then its
        standing-still messages get their jobs again.
        """
        try:
            return {q for q, n in self.broker.depths(list(QUEUES)).items() if n > 0}
        except Exception:
            return set()
