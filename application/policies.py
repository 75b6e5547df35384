"""Which jobs follow which event (docs/API.md §8). Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
    batch_part,
)
from domain.conversation import DIRECT
from domain.message import Message

SPLIT = "split"
SEAL = "seal"
INDEX = "index"


def delivery_job(
    message_id: Any, kind: str, tenant_id: str, correlation_id: str, priority: str = ""
) -> Job:
    if kind == DIRECT:
        return Job(MESSAGE_DELIVERY, message_id, "b0", tenant_id, 1, correlation_id, priority)
    return Job(BATCH_MESSAGE_SENDING, message_id, SPLIT, tenant_id, 1, correlation_id, priority)


# The events ``jobs_for``, ``held_jobs`` or ``dropped_jobs`` may answer for: the relay
# decodes no others.
JOB_EVENTS: tuple[type, ...] = (
    Message.Created,
    Message.EncryptionQueued,
    Message.Encrypted,
    Message.Delivered,
    Message.RetryRequested,
    Message.Cancelled,
)


def jobs_for(event: Any) -> list[Job]:
    """The jobs the relay publishes once ``event`` is in the log.

    A scheduled send's first jobs are not among them: ``held_jobs`` has them.
    """
    meta: dict[str, str] = getattr(event, "meta", {}) or {}
    tenant = meta.get("tenant_id", "")
    correlation = meta.get("correlation_id", "")
    priority = meta.get("priority", "")
    mid = event.originator_id
    jobs: list[Job] = []
    if isinstance(event, Message.Created):
        if event.send_at is None:
            jobs.extend(_created_jobs(event, tenant, correlation, priority))
    elif isinstance(event, Message.EncryptionQueued):
        jobs.append(Job(MESSAGE_ENCRYPTION, mid, SEAL, tenant, 1, correlation, priority))
    elif isinstance(event, Message.Encrypted):
        jobs.append(delivery_job(mid, event.kind, tenant, correlation, priority))
    elif isinstance(event, Message.Delivered):
        if event.notify:
            part = batch_part(event.batch)
            jobs.append(Job(MESSAGE_NOTIFICATION, mid, part, tenant, 1, correlation, priority))
    elif isinstance(event, Message.RetryRequested):
        retry = Job.parse_id(event.job_id, tenant)
        jobs.append(Job(retry.queue, mid, retry.part, tenant, 1, correlation, priority))
    return jobs


def _created_jobs(event: Any, tenant: str, correlation: str, priority: str) -> list[Job]:
    mid = event.originator_id
    jobs: list[Job] = []
    if not event.encrypted:
        jobs.append(delivery_job(mid, event.kind, tenant, correlation, priority))
    elif event.send_at is not None:
        # Sealed for its recipients only when due (a client-sealed one: its metadata).
        jobs.append(Job(MESSAGE_ENCRYPTION, mid, SEAL, tenant, 1, correlation, priority))
    if event.index:
        jobs.append(Job(MESSAGE_INDEXING, mid, INDEX, tenant, 1, correlation, priority))
    return jobs


def held_jobs(event: Any) -> tuple[datetime, list[Job]] | None:
    """A scheduled send's first jobs and when they are due (the relay holds them in the
    delayed jobs until then); None for any other event."""
    if not isinstance(event, Message.Created) or event.send_at is None:
        return None
    meta: dict[str, str] = getattr(event, "meta", {}) or {}
    jobs = _created_jobs(
        event,
        meta.get("tenant_id", ""),
        meta.get("correlation_id", ""),
        meta.get("priority", ""),
    )
    return datetime.fromisoformat(event.send_at), jobs


def dropped_jobs(event: Any) -> list[str]:
    """Ids of held jobs that ``event`` calls off (a cancelled scheduled send's)."""
    if isinstance(event, Message.Cancelled):
        return list(event.job_ids)
    return []


def first_jobs(message: Message, correlation_id: str = "") -> list[Job]:
    """The jobs a send schedules first, as reported in its 202 answer (a scheduled
    send's: those held until it is due)."""
    jobs: list[Job] = []
    tenant, priority = message.tenant_id, message.priority
    if message.encrypted and message.encryption is None:
        jobs.append(Job(MESSAGE_ENCRYPTION, message.id, SEAL, tenant, 1, correlation_id, priority))
    else:
        jobs.append(delivery_job(message.id, message.kind, tenant, correlation_id, priority))
    if message.index:
        jobs.append(Job(MESSAGE_INDEXING, message.id, INDEX, tenant, 1, correlation_id, priority))
    return jobs


def pending_jobs(message: Message, now: datetime | None = None) -> list[Job]:
    """Jobs that would move a message on from where it stands (for the reconciler).

    None for a cancelled send, nor for a scheduled one before it is due (``now``).
    """
    if message.cancelled:
        return []
    if message.is_scheduled and (
        now is None or now < datetime.fromisoformat(message.send_at or "")
    ):
        return []
    return [replace(job, priority=message.priority) for job in _pending(message)]


def _pending(message: Message) -> list[Job]:
    tenant, mid = message.tenant_id, message.id
    jobs: list[Job] = []
    if message.encrypted and message.encryption is None:
        if not message.shredded:  # shredded before it was sealed for anyone: it never will be
            jobs.append(Job(MESSAGE_ENCRYPTION, mid, SEAL, tenant))
    elif not message.is_delivered:
        jobs.extend(
            Job(MESSAGE_DELIVERY, mid, batch_part(key), tenant)
            for key in message.batch_keys()
            if key not in message.delivered
        )
    if message.notify:
        jobs.extend(
            Job(MESSAGE_NOTIFICATION, mid, batch_part(key), tenant)
            for key in message.delivered
            if key not in message.notified_batches
        )
    if message.index and not message.indexed:
        jobs.append(Job(MESSAGE_INDEXING, mid, INDEX, tenant))
    return jobs
