"""The six queues, by name, and the ids of their jobs: jobs run on them, and a message's
failures name them (``application/jobs.py`` re-exports all of it)."""

from __future__ import annotations

MESSAGE_DELIVERY = "MESSAGE_DELIVERY"
MESSAGE_NOTIFICATION = "MESSAGE_NOTIFICATION"
MESSAGE_ENCRYPTION = "MESSAGE_ENCRYPTION"
MESSAGE_INDEXING = "MESSAGE_INDEXING"
BATCH_MESSAGE_SENDING = "BATCH_MESSAGE_SENDING"
MESSAGE_CLEANUP = "MESSAGE_CLEANUP"

QUEUES: tuple[str, ...] = (
    MESSAGE_DELIVERY,
    MESSAGE_NOTIFICATION,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    BATCH_MESSAGE_SENDING,
    MESSAGE_CLEANUP,
)


def job_id(queue: str, message_id: object, part: str) -> str:
    """A job's id, ``QUEUE:message-id:part``: the same however often the job is made."""
    return f"{queue}:{message_id}:{part}"


def batch_part(batch: str | int) -> str:
    """The part of a delivery or notification job that names its batch of recipients."""
    return f"b{batch}"
