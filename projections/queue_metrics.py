"""The `queue_metrics` view: what the event log tells of each queue's jobs.

A job is scheduled by the event after which the relay publishes it
(``application.policies.jobs_for``: ``Created``, ``EncryptionQueued``, ``Encrypted``,
``Delivered``, ``RetryRequested``) and completed by the event its work records:
``Encrypted`` (the encryption job), ``Delivered`` (that batch's delivery job),
``Notified`` (that batch's notification job), ``Indexed`` (the indexing job).
A group message's split (``BATCH_MESSAGE_SENDING``) records no event of its own: its
first ``Delivered`` completes it, and the delivery jobs it hands out count as
scheduled by the event that scheduled the split. ``ProcessingFailed`` puts a job in
the failed list and ``RetryRequested`` takes it out (as the `messages` view's
``failed_jobs``), counting a retry requested and scheduling the job again.

A scheduled send's first jobs (``held_jobs``) count as scheduled at its due time.
Only jobs some event scheduled count: an ``Encrypted`` recorded by an end-to-end
send, say, completes no job. A job that runs and finds nothing to do records no
event and is not counted; neither are ``MESSAGE_CLEANUP`` runs, which the relay's
clock schedules. Times are the events' own timestamps, so a rebuild from the log
gives the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, select

from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
    batch_part,
    job_id,
)
from application.policies import INDEX, SEAL, SPLIT, held_jobs, jobs_for
from domain.message import Message
from infrastructure.storage.bulk import rows_where_in, upsert_rows
from projections.tables import queue_metric_jobs, queue_metric_totals

NAME = "queue_metrics"
Row = dict[str, Any]
COUNTERS = ("completed", "failed", "retries_requested")


def split_of(message_id: UUID) -> str:
    """The id of a group message's split job, whose schedule its deliveries share."""
    return job_id(BATCH_MESSAGE_SENDING, message_id, SPLIT)


def completed_by(event: Any) -> list[tuple[str, str]]:
    """``(job id, queue)`` of the jobs ``event`` completes, if they were scheduled."""
    mid = event.originator_id
    if isinstance(event, Message.Encrypted):
        return [(job_id(MESSAGE_ENCRYPTION, mid, SEAL), MESSAGE_ENCRYPTION)]
    if isinstance(event, Message.Delivered):
        return [
            (job_id(MESSAGE_DELIVERY, mid, batch_part(event.batch)), MESSAGE_DELIVERY),
            (split_of(mid), BATCH_MESSAGE_SENDING),
        ]
    if isinstance(event, Message.Notified):
        return [(job_id(MESSAGE_NOTIFICATION, mid, batch_part(event.batch)), MESSAGE_NOTIFICATION)]
    if isinstance(event, Message.Indexed):
        return [(job_id(MESSAGE_INDEXING, mid, INDEX), MESSAGE_INDEXING)]
    return []


def touched_by(event: Any) -> set[str]:
    """Every job row applying ``event`` may read or change."""
    ids = {job.job_id for job in jobs_for(event)}
    held = held_jobs(event)
    if held is not None:
        ids.update(job.job_id for job in held[1])
    ids.update(job for job, _ in completed_by(event))
    if isinstance(event, Message.ProcessingFailed | Message.RetryRequested):
        ids.add(event.job_id)
    if isinstance(event, Message.ProcessingFailed | Message.Delivered):
        ids.add(split_of(event.originator_id))
    return ids


@dataclass
class _Batch:
    """The job rows one batch reads and changes, and what it adds to each queue's totals."""

    jobs: dict[str, Row]
    changed: set[str] = field(default_factory=set)
    totals: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, queue: str, counter: str, by: int = 1) -> None:
        counts = self.totals.setdefault(queue, dict.fromkeys(COUNTERS, 0))
        counts[counter] += by

    def row(self, job: str, queue: str, at: float, position: int) -> Row:
        """The job's row; a new one (scheduled at ``at``, or as its message's split
        was if it is a delivery handed out by one) when it has none."""
        found = self.jobs.get(job)
        if found is not None:
            return found
        if queue == MESSAGE_DELIVERY:
            split = self.jobs.get(split_of(Job.parse_id(job, "").message_id))
            if split is not None:
                at = split["scheduled_at"]
        row: Row = {
            "job_id": job,
            "queue": queue,
            "scheduled_at": at,
            "completed_at": None,
            "latency_ms": None,
            "failed": False,
            "position": position,
        }
        self.jobs[job] = row
        return row

    def handed_out(self, job: str, queue: str) -> bool:
        """Whether a delivery job without a row of its own came from a split."""
        if queue != MESSAGE_DELIVERY or job in self.jobs:
            return False
        return split_of(Job.parse_id(job, "").message_id) in self.jobs

    def touch(self, row: Row, position: int) -> None:
        row["position"] = position
        self.changed.add(row["job_id"])


class QueueMetricsView:
    """Applies scheduling, completing and failing events to the job rows and totals."""

    name = NAME
    handles: tuple[type, ...] = (
        Message.Created,
        Message.EncryptionQueued,
        Message.Encrypted,
        Message.Delivered,
        Message.Notified,
        Message.Indexed,
        Message.ProcessingFailed,
        Message.RetryRequested,
    )

    def apply(self, event: Any, conn: Connection, position: int) -> None:
        self.apply_many([(position, event)], conn)

    def apply_many(self, batch: Sequence[tuple[int, Any]], conn: Connection) -> None:
        wanted: set[str] = set()
        for _, event in batch:
            wanted |= touched_by(event)
        loaded = rows_where_in(conn, queue_metric_jobs, "job_id", wanted)
        rows = _Batch({row["job_id"]: row for row in loaded})
        for position, event in batch:
            self.on(event, position, rows)
        self._write(conn, rows)

    def on(self, event: Any, position: int, rows: _Batch) -> None:
        at = event.timestamp.timestamp()
        # An event completes the job that recorded it before it schedules the next one.
        for job, queue in completed_by(event):
            if job in rows.jobs or rows.handed_out(job, queue):
                row = rows.row(job, queue, at, position)
                if row["completed_at"] is None:
                    row["completed_at"] = at
                    row["latency_ms"] = max(0.0, at - row["scheduled_at"]) * 1000.0
                    rows.count(queue, "completed")
                    rows.touch(row, position)
        if isinstance(event, Message.ProcessingFailed):
            row = rows.row(event.job_id, event.queue, at, position)
            if not row["failed"]:
                row["failed"] = True
                rows.count(event.queue, "failed")
                rows.touch(row, position)
        elif isinstance(event, Message.RetryRequested):
            rows.count(event.queue, "retries_requested")
            failing = rows.jobs.get(event.job_id)
            if failing is not None and failing["failed"]:
                failing["failed"] = False
                rows.count(event.queue, "failed", -1)
                rows.touch(failing, position)
        for scheduled, when in self._scheduled(event, at):
            row = rows.row(scheduled.job_id, scheduled.queue, when, position)
            if row["completed_at"] is None:  # a job done stays done
                row["scheduled_at"] = when
                rows.touch(row, position)

    @staticmethod
    def _scheduled(event: Any, at: float) -> list[tuple[Job, float]]:
        """The jobs ``event`` schedules and from when: a scheduled send's first jobs
        count from their due time."""
        held = held_jobs(event)
        if held is not None:
            due, jobs = held
            return [(job, due.timestamp()) for job in jobs]
        return [(job, at) for job in jobs_for(event)]

    def _write(self, conn: Connection, rows: _Batch) -> None:
        upsert_rows(conn, queue_metric_jobs, ["job_id"], [rows.jobs[j] for j in rows.changed])
        moved = {q: counts for q, counts in rows.totals.items() if any(counts.values())}
        if not moved:
            return
        current = {
            row.queue: row._asdict()
            for row in conn.execute(
                select(queue_metric_totals).where(queue_metric_totals.c.queue.in_(list(moved)))
            )
        }
        updated = []
        for queue, counts in moved.items():
            row = current.get(queue) or {"queue": queue, **dict.fromkeys(COUNTERS, 0)}
            updated.append({**row, **{c: int(row[c]) + counts[c] for c in COUNTERS}})
        upsert_rows(conn, queue_metric_totals, ["queue"], updated)
