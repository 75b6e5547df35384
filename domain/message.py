"""The Message aggregate: one per message, from acceptance to delivery."""

from __future__ import annotations

import functools
import json
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.queues import (
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    batch_part,
    job_id,
)

BATCH_SIZE = 50
ENVELOPE_VERSION = "v1"

ACCEPTED = "accepted"
ENCRYPTING = "encrypting"
ENCRYPTED = "encrypted"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"
SCHEDULED = "scheduled"
CANCELLED = "cancelled"

HIGH = "high"
NORMAL = "normal"
LOW = "low"
PRIORITIES = (HIGH, NORMAL, LOW)

_T = "courier.message:"


class MessageError(Exception):
    """A command on a message that its rules refuse."""


class NotARecipient(MessageError):
    pass


def message_id_for(tenant_id: str, sender_id: str, client_message_id: str) -> UUID:
    """The id a client-chosen message id maps to: the same send, the same message."""
    name = json.dumps(["courier:message", tenant_id, sender_id, client_message_id])
    return uuid5(NAMESPACE_URL, name)


def batches_of(recipient_ids: list[str], size: int = BATCH_SIZE) -> list[list[str]]:
    return [recipient_ids[i : i + size] for i in range(0, len(recipient_ids), size)]


@functools.lru_cache(maxsize=64)
def _batch_keys(recipients: int) -> tuple[str, ...]:
    # "0", "1", …: one per batch of BATCH_SIZE recipients (asked for on every status).
    return tuple(str(i) for i in range(-(-recipients // BATCH_SIZE)))


class Message(Aggregate):
    """A message sent into a conversation, with its processing history."""

    TOPIC = _T + "Message"

    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        TOPIC = _T + "Created"
        tenant_id: str
        conversation_id: UUID
        sender_id: str
        recipient_ids: list[str]
        kind: str
        encrypted: bool
        notify: bool
        index: bool
        content: str | None
        sealed: dict[str, Any] | None
        end_to_end: bool
        # Nothing derived from the content is recorded here: with a clientMessageId,
        # "vault:<reference>" names the key-vault rows (deleted by shredding) holding the
        # send's digest and tokens; else "". Events recorded before held the digest.
        content_digest: str
        client_message_id: str | None
        # Always None now (the tokens are in the key vault); events recorded before held
        # a server-sealed message's blind-index tokens here.
        search_tokens: list[str] | None = None
        # When a scheduled send is due (RFC 3339, UTC); None: sent at once.
        send_at: str | None = None

    class EncryptionQueued(Event):
        TOPIC = _T + "EncryptionQueued"

    class Encrypted(Event):
        TOPIC = _T + "Encrypted"
        metadata: dict[str, Any]
        version: str
        kind: str

    class Delivered(Event):
        TOPIC = _T + "Delivered"
        batch: str
        online: list[str]
        offline: list[str]
        notify: bool

    class Notified(Event):
        TOPIC = _T + "Notified"
        batch: str
        outcomes: dict[str, dict[str, str]]

    class Indexed(Event):
        TOPIC = _T + "Indexed"

    class ProcessingFailed(Event):
        TOPIC = _T + "ProcessingFailed"
        queue: str
        job_id: str
        attempts: int
        error: str

    class RetryRequested(Event):
        TOPIC = _T + "RetryRequested"
        queue: str
        job_id: str

    class Read(Event):
        TOPIC = _T + "Read"
        reader_id: str

    class Viewed(Event):
        TOPIC = _T + "Viewed"
        viewer_id: str
        what: str

    class Shredded(Event):
        TOPIC = _T + "Shredded"
        reason: str

    class Cancelled(Event):
        """The sender cancelled a scheduled send before it was due; ``job_ids``: the
        jobs held until then, which are dropped."""

        TOPIC = _T + "Cancelled"
        job_ids: list[str]

    @event(Created)
    def __init__(
        self,
        # Optional, so it comes before the `*`: eventsourcing treats every keyword-only
        # argument as required. Only the search view reads it; the aggregate keeps none.
        search_tokens: list[str] | None = None,
        send_at: str | None = None,
        *,
        id: UUID,
        tenant_id: str,
        conversation_id: UUID,
        sender_id: str,
        recipient_ids: list[str],
        kind: str,
        encrypted: bool,
        notify: bool,
        index: bool,
        content: str | None,
        sealed: dict[str, Any] | None,
        end_to_end: bool,
        content_digest: str,
        client_message_id: str | None,
        meta: dict[str, str],
    ) -> None:
        self.tenant_id = tenant_id
        self.conversation_id = conversation_id
        self.sender_id = sender_id
        self.recipient_ids = list(recipient_ids)
        self.kind = kind
        self.encrypted = encrypted
        self.notify = notify
        self.index = index
        self.content = content
        self.sealed = dict(sealed) if sealed else None
        self.end_to_end = end_to_end
        self.content_digest = content_digest
        self.client_message_id = client_message_id
        self.encryption_queued = False
        self.encryption: dict[str, Any] | None = None
        self.encryption_version: str | None = ENVELOPE_VERSION if encrypted else None
        self.delivered: dict[str, list[str]] = {}
        self.online: list[str] = []
        self.offline: list[str] = []
        self.notified_batches: list[str] = []
        self.indexed = False
        self.failures: list[dict[str, Any]] = []
        self.read_by: list[str] = []
        self.shredded = False
        self.send_at = send_at
        self.priority = meta.get("priority", "")
        self.cancelled = False

    # ---- derived facts -------------------------------------------------

    def batches(self) -> list[list[str]]:
        return batches_of(self.recipient_ids)

    def batch_keys(self) -> list[str]:
        return list(_batch_keys(len(self.recipient_ids)))

    @property
    def delivered_count(self) -> int:
        return sum(len(ids) for ids in self.delivered.values())

    @property
    def is_delivered(self) -> bool:
        return all(key in self.delivered for key in self.batch_keys())

    @property
    def is_notified(self) -> bool:
        keys = self.batch_keys()
        return self.notify and self.is_delivered and all(k in self.notified_batches for k in keys)

    @property
    def ready_for_delivery(self) -> bool:
        return not self.encrypted or self.encryption is not None

    @property
    def started(self) -> bool:
        """Whether its processing began (sealed for recipients, delivered, indexed, failed)."""
        return bool(self.delivered or self.indexed or self.failures or self.encryption is not None)

    @property
    def is_scheduled(self) -> bool:
        """A scheduled send whose processing has not begun (and was not cancelled)."""
        return self.send_at is not None and not self.cancelled and not self.started

    @property
    def status(self) -> str:
        if self.cancelled:
            return CANCELLED
        if self.send_at is not None and not self.started:
            return SCHEDULED
        if self.is_delivered:
            return DELIVERED
        if self.failures:
            return FAILED
        if self.delivered:
            return DELIVERING
        if self.encrypted and self.encryption is None:
            return ENCRYPTING
        if self.encrypted:
            return ENCRYPTED
        return ACCEPTED

    def participants(self) -> list[str]:
        return [self.sender_id, *self.recipient_ids]

    def may_see(self, user_id: str) -> bool:
        return user_id == self.sender_id or user_id in self.recipient_ids

    def shown_to(self, user_id: str) -> bool:
        """Whether ``user_id`` may see it now: recipients see a scheduled send once its
        processing began, a cancelled one never."""
        if user_id == self.sender_id:
            return True
        return user_id in self.recipient_ids and not (self.cancelled or self.is_scheduled)

    # ---- orders ----------------------------------------------------------

    @event(EncryptionQueued)
    def queue_encryption(self, meta: dict[str, str]) -> None:
        self.encryption_queued = True

    def record_encryption(
        self, metadata: dict[str, Any], version: str, meta: dict[str, str]
    ) -> bool:
        """Record the sealed envelope's public metadata; False when it already was."""
        if self.encryption is not None or self.cancelled:
            return False
        self._encrypted(metadata=metadata, version=version, kind=self.kind, meta=meta)
        return True

    @event(Encrypted)
    def _encrypted(
        self, metadata: dict[str, Any], version: str, kind: str, meta: dict[str, str]
    ) -> None:
        self.encryption = dict(metadata)
        self.encryption_version = version
        self.failures = [f for f in self.failures if f["queue"] != MESSAGE_ENCRYPTION]

    def deliver(
        self, batch: str, online: list[str], offline: list[str], meta: dict[str, str]
    ) -> bool:
        """Record that a batch reached its recipients; False when it already had."""
        if batch in self.delivered or self.cancelled:
            return False
        self._delivered(batch=batch, online=online, offline=offline, notify=self.notify, meta=meta)
        return True

    @event(Delivered)
    def _delivered(
        self,
        batch: str,
        online: list[str],
        offline: list[str],
        notify: bool,
        meta: dict[str, str],
    ) -> None:
        self.delivered = {**self.delivered, batch: [*online, *offline]}
        self.online = [*self.online, *online]
        self.offline = [*self.offline, *offline]
        delivered_job = job_id(MESSAGE_DELIVERY, self.id, batch_part(batch))
        self.failures = [f for f in self.failures if f["job_id"] != delivered_job]

    def mark_notified(
        self, batch: str, outcomes: dict[str, dict[str, str]], meta: dict[str, str]
    ) -> bool:
        if batch in self.notified_batches:
            return False
        self._notified(batch=batch, outcomes=outcomes, meta=meta)
        return True

    @event(Notified)
    def _notified(
        self, batch: str, outcomes: dict[str, dict[str, str]], meta: dict[str, str]
    ) -> None:
        self.notified_batches = [*self.notified_batches, batch]
        self.failures = [
            f
            for f in self.failures
            if f["job_id"] != job_id(MESSAGE_NOTIFICATION, self.id, batch_part(batch))
        ]

    def mark_indexed(self, meta: dict[str, str]) -> bool:
        if self.indexed or self.cancelled:
            return False
        self._indexed(meta=meta)
        return True

    @event(Indexed)
    def _indexed(self, meta: dict[str, str]) -> None:
        self.indexed = True
        self.failures = [f for f in self.failures if f["queue"] != MESSAGE_INDEXING]

    @event(ProcessingFailed)
    def fail(
        self, queue: str, job_id: str, attempts: int, error: str, meta: dict[str, str]
    ) -> None:
        self.failures = [
            *[f for f in self.failures if f["job_id"] != job_id],
            {"queue": queue, "job_id": job_id, "attempts": attempts, "error": error},
        ]

    @event(RetryRequested)
    def request_retry(self, queue: str, job_id: str, meta: dict[str, str]) -> None:
        self.failures = [f for f in self.failures if f["job_id"] != job_id]

    def mark_read(self, reader_id: str, meta: dict[str, str]) -> bool:
        if reader_id not in self.recipient_ids:
            raise NotARecipient(reader_id)
        if reader_id in self.read_by:
            return False
        self._read(reader_id=reader_id, meta=meta)
        return True

    @event(Read)
    def _read(self, reader_id: str, meta: dict[str, str]) -> None:
        self.read_by = [*self.read_by, reader_id]

    @event(Viewed)
    def record_view(self, viewer_id: str, what: str, meta: dict[str, str]) -> None:
        pass

    @event(Shredded)
    def shred(self, reason: str, meta: dict[str, str]) -> None:
        self.shredded = True

    def cancel(self, job_ids: list[str], meta: dict[str, str]) -> None:
        if not self.is_scheduled:
            raise MessageError("only a scheduled send not yet begun can be cancelled")
        self._cancelled(job_ids=job_ids, meta=meta)

    @event(Cancelled)
    def _cancelled(self, job_ids: list[str], meta: dict[str, str]) -> None:
        self.cancelled = True
