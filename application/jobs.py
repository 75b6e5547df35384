"""Jobs, their deterministic ids, and the per-queue settings (docs/API.md §8)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

# The queues' names and job ids are the domain's (a message's failures name them);
# re-exported here.
from domain.queues import BATCH_MESSAGE_SENDING as BATCH_MESSAGE_SENDING
from domain.queues import MESSAGE_CLEANUP as MESSAGE_CLEANUP
from domain.queues import MESSAGE_DELIVERY as MESSAGE_DELIVERY
from domain.queues import MESSAGE_ENCRYPTION as MESSAGE_ENCRYPTION
from domain.queues import MESSAGE_INDEXING as MESSAGE_INDEXING
from domain.queues import MESSAGE_NOTIFICATION as MESSAGE_NOTIFICATION
from domain.queues import QUEUES as QUEUES
from domain.queues import batch_part as batch_part
from domain.queues import job_id as job_id

_RNG = random.Random()


LANES = ("high", "", "low")  # a queue's lanes, taken in this order; "": normal
LANED: tuple[str, ...] = QUEUES[:5]  # the message queues; MESSAGE_CLEANUP has one lane


def lane_name(queue: str, priority: str) -> str:
    """The broker queue of a queue's lane: ``QUEUE.high``, ``QUEUE``, ``QUEUE.low``."""
    return f"{queue}.{priority}" if priority and queue in LANED else queue


def lane_rank(priority: str) -> int:
    """0 for high, 1 for normal, 2 for low: the order a worker takes jobs in."""
    return 0 if priority == "high" else 2 if priority == "low" else 1


class BadJobId(ValueError):
    pass


def queue_of(job_id: str) -> str:
    """The queue a job id names (what comes before its first colon)."""
    return job_id.partition(":")[0]


@dataclass(frozen=True)
class QueueSettings:
    name: str
    concurrency: int
    max_attempts: int
    backoff: str  # "exponential" | "fixed"
    backoff_seconds: float
    timeout_seconds: float

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before ``attempt`` (2 = the first retry)."""
        if self.backoff == "fixed":
            return self.backoff_seconds
        base = self.backoff_seconds * float(2 ** max(attempt - 2, 0))
        jitter: float = (rng or _RNG).uniform(0.0, 0.2) * base
        return base + jitter


DEFAULT_QUEUE_SETTINGS: dict[str, QueueSettings] = {
    q.name: q
    for q in (
        QueueSettings(MESSAGE_DELIVERY, 10, 5, "exponential", 2.0, 30.0),
        QueueSettings(MESSAGE_NOTIFICATION, 15, 3, "exponential", 1.0, 20.0),
        QueueSettings(MESSAGE_ENCRYPTION, 5, 3, "exponential", 2.0, 45.0),
        QueueSettings(MESSAGE_INDEXING, 3, 3, "exponential", 3.0, 60.0),
        QueueSettings(BATCH_MESSAGE_SENDING, 2, 3, "exponential", 5.0, 300.0),
        QueueSettings(MESSAGE_CLEANUP, 1, 2, "fixed", 10.0, 600.0),
    )
}


@dataclass(frozen=True)
class Job:
    """One unit of work on one message; its id is the same however often it is made."""

    queue: str
    message_id: UUID
    part: str
    tenant_id: str
    attempt: int = 1
    correlation_id: str = ""
    # "high" or "low" (empty: normal): which lane of its queue the job travels in. Not
    # part of its id: the same work is the same job whatever its priority.
    priority: str = ""

    @property
    def job_id(self) -> str:
        return job_id(self.queue, self.message_id, self.part)

    @property
    def route(self) -> str:
        """The broker queue this job is published to (its queue's lane)."""
        return lane_name(self.queue, self.priority)

    def next_attempt(self) -> Job:
        return replace(self, attempt=self.attempt + 1)

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "queue": self.queue,
            "messageId": str(self.message_id),
            "part": self.part,
            "tenantId": self.tenant_id,
            "attempt": self.attempt,
            "correlationId": self.correlation_id,
        }
        if self.priority:
            wire["priority"] = self.priority
        return wire

    @classmethod
    def from_wire(cls, body: Any) -> Job:
        if not isinstance(body, dict) or body.get("queue") not in QUEUES:
            raise BadJobId("malformed job body: unknown queue")
        try:
            return cls(
                queue=str(body["queue"]),
                message_id=UUID(str(body["messageId"])),
                part=str(body["part"]),
                tenant_id=str(body["tenantId"]),
                attempt=int(body.get("attempt", 1)),
                correlation_id=str(body.get("correlationId", "")),
                priority=_priority(body.get("priority", "")),
            )
        except (KeyError, ValueError, TypeError, OverflowError) as error:
            raise BadJobId(f"malformed job body: {type(error).__name__}") from None

    @classmethod
    def parse_id(cls, job_id: str, tenant_id: str) -> Job:
        queue, sep, rest = job_id.partition(":")
        message, sep2, part = rest.partition(":")
        if not (sep and sep2) or queue not in QUEUES:
            raise BadJobId(job_id)
        try:
            message_id = UUID(message)
        except ValueError:
            raise BadJobId(job_id) from None
        return cls(queue=queue, message_id=message_id, part=part, tenant_id=tenant_id)


def _priority(value: Any) -> str:
    if value not in ("", "high", "low"):
        raise ValueError("unknown priority")
    return str(value)


MAX_BATCH = 200  # jobs in one broker message


def batch_to_wire(jobs: list[Job]) -> dict[str, Any]:
    """One broker message for many jobs of one queue."""
    return {"jobs": [job.to_wire() for job in jobs]}


def jobs_from_wire(body: Any) -> list[Job]:
    """The jobs of a broker message: a batch (``{"jobs": [...]}``) or a single job.

    Raises ``BadJobId`` when the body, or any job in it, is malformed.
    """
    if isinstance(body, dict) and "jobs" in body:
        items = body["jobs"]
        if not isinstance(items, list):
            raise BadJobId("malformed job body: jobs is not a list")
        return [Job.from_wire(item) for item in items]
    return [Job.from_wire(body)]
