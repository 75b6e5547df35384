"""Which jobs follow which event (docs/API.md §8). Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
)
from domain.message import DIRECT, Message

SPLIT = "split"
SEAL = "seal"
INDEX = "index"


def delivery_job(message_id: Any, kind: str, tenant_id: str, correlation_id: str) -> Job:
    if kind == DIRECT:
        return Job(MESSAGE_DELIVERY, message_id, "b0", tenant_id, 1, correlation_id)
    return Job(BATCH_MESSAGE_SENDING, message_id, SPLIT, tenant_id, 1, correlation_id)


# The events ``jobs_for`` may answer jobs for: the relay decodes no others.
JOB_EVENTS: tuple[type, ...] = (
    Message.Created,
    Message.EncryptionQueued,
    Message.Encrypted,
    Message.Delivered,
    Message.RetryRequested,
)


def jobs_for(event: Any) -> list[Job]:
    """The jobs the relay publishes once ``event`` is in the log."""
    meta: dict[str, str] = getattr(event, "meta", {}) or {}
    tenant = meta.get("tenant_id", "")
    correlation = meta.get("correlation_id", "")
    mid = event.originator_id
    jobs: list[Job] = []
    if isinstance(event, Message.Created):
        if not event.encrypted:
            jobs.append(delivery_job(mid, event.kind, tenant, correlation))
        if event.index:
            jobs.append(Job(MESSAGE_INDEXING, mid, INDEX, tenant, 1, correlation))
    elif isinstance(event, Message.EncryptionQueued):
        jobs.append(Job(MESSAGE_ENCRYPTION, mid, SEAL, tenant, 1, correlation))
    elif isinstance(event, Message.Encrypted):
        jobs.append(delivery_job(mid, event.kind, tenant, correlation))
    elif isinstance(event, Message.Delivered):
        if event.notify:
            jobs.append(Job(MESSAGE_NOTIFICATION, mid, f"b{event.batch}", tenant, 1, correlation))
    elif isinstance(event, Message.RetryRequested):
        retry = Job.parse_id(event.job_id, tenant)
        jobs.append(Job(retry.queue, mid, retry.part, tenant, 1, correlation))
    return jobs


def first_jobs(message: Message, correlation_id: str = "") -> list[Job]:
    """The jobs a send schedules first, as reported in its 202 answer."""
    jobs: list[Job] = []
    if message.encrypted and message.encryption is None:
        jobs.append(Job(MESSAGE_ENCRYPTION, message.id, SEAL, message.tenant_id, 1, correlation_id))
    else:
        jobs.append(delivery_job(message.id, message.kind, message.tenant_id, correlation_id))
    if message.index:
        jobs.append(Job(MESSAGE_INDEXING, message.id, INDEX, message.tenant_id, 1, correlation_id))
    return jobs


def pending_jobs(message: Message) -> list[Job]:
    """Jobs that would move a message on from where it stands (for the reconciler)."""
    tenant, mid = message.tenant_id, message.id
    jobs: list[Job] = []
    if message.encrypted and message.encryption is None:
        if not message.shredded:  # shredded before it was sealed for anyone: it never will be
            jobs.append(Job(MESSAGE_ENCRYPTION, mid, SEAL, tenant))
    elif not message.is_delivered:
        jobs.extend(
            Job(MESSAGE_DELIVERY, mid, f"b{key}", tenant)
            for key in message.batch_keys()
            if key not in message.delivered
        )
    if message.notify:
        jobs.extend(
            Job(MESSAGE_NOTIFICATION, mid, f"b{key}", tenant)
            for key in message.delivered
            if key not in message.notified_batches
        )
    if message.index and not message.indexed:
        jobs.append(Job(MESSAGE_INDEXING, mid, INDEX, tenant))
    return jobs
