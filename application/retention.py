"""Retention: shred the content keys of expired messages, unless a legal hold stops it.

``RETENTION_DAYS`` after it was sent, an encrypted message's content keys are
destroyed (``Messaging.shred``, reason ``retention``); its events, and so its audit
trail, stay. A legal hold on a conversation keeps all of its messages readable until
the hold is released. Holds are events on the conversation, so who placed or lifted
one, when and why is part of the trail.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError

from application.errors import Invalid, NotFound, OnLegalHold
from application.jobs import MESSAGE_CLEANUP, Job
from application.messaging import Messaging
from domain.conversation import Conversation
from domain.events import Context, system_context

log = logging.getLogger("courier.retention")

CLEANUP_ID = uuid5(NAMESPACE_URL, "courier:retention")
ALL_TENANTS = "*"
MAX_REASON = 500


class ExpiredMessages(Protocol):
    """The read side's list of encrypted, unshredded messages not on hold."""

    def expired(self, before: datetime, limit: int) -> list[tuple[str, str]]: ...


def cleanup_job(now: datetime, every_seconds: int) -> Job:
    """The periodic cleanup job; one id per period, so a repeat publish is harmless."""
    slot = int(now.timestamp()) // max(every_seconds, 1)
    return Job(MESSAGE_CLEANUP, CLEANUP_ID, f"r{slot}", ALL_TENANTS)


@dataclass(frozen=True)
class Report:
    shredded: int
    held: int
    failed: int


class Retention:
    """Runs one cleanup: shreds what expired, in batches, within a time budget."""

    def __init__(
        self,
        app: Messaging,
        expired: ExpiredMessages,
        days: int,
        *,
        batch: int = 500,
        budget_seconds: float = 300.0,
    ) -> None:
        self.app = app
        self.expired = expired
        self.days = days
        self.batch = batch
        self.budget_seconds = budget_seconds

    def run(self, now: datetime, job: Job | None = None) -> Report:
        if self.days <= 0:
            return Report(0, 0, 0)
        cutoff = now - timedelta(days=self.days)
        deadline = time.monotonic() + self.budget_seconds
        shredded = held = failed = 0
        skip: set[str] = set()
        while time.monotonic() < deadline:
            candidates = [
                c for c in self.expired.expired(cutoff, self.batch + len(skip)) if c[0] not in skip
            ]
            if not candidates:
                break
            for message_id, tenant_id in candidates:
                skip.add(message_id)
                outcome = self._shred(message_id, tenant_id, job)
                shredded += outcome == "shredded"
                held += outcome == "held"
                failed += outcome == "failed"
        if shredded or held or failed:
            log.info("retention: %d shredded, %d on hold, %d failed", shredded, held, failed)
        return Report(shredded, held, failed)

    def _shred(self, message_id: str, tenant_id: str, job: Job | None) -> str:
        ctx = system_context(
            tenant_id, job.correlation_id if job else "", job.job_id if job else ""
        )
        try:
            # Messaging.shred checks the hold on the conversation itself: a hold the read
            # side has not shown yet counts all the same.
            self.app.shred(ctx, UUID(message_id), "retention")
        except OnLegalHold:
            return "held"
        except (NotFound, Invalid):
            log.warning("retention could not shred message %s", message_id, exc_info=True)
            return "failed"
        return "shredded"


def _conversation(app: Messaging, tenant_id: str, conversation_id: UUID) -> Conversation:
    try:
        conversation: object = app.repository.get(conversation_id)
    except AggregateNotFoundError:
        raise NotFound("conversation not found") from None
    if not isinstance(conversation, Conversation) or conversation.tenant_id != tenant_id:
        raise NotFound("conversation not found")
    return conversation


class LegalHolds:
    """Placing and releasing legal holds (role auditor), recorded on the conversation."""

    def __init__(self, app: Messaging) -> None:
        self.app = app

    def place(self, ctx: Context, conversation_id: UUID, reason: str) -> Conversation:
        return self._change(ctx, conversation_id, reason, place=True)

    def release(self, ctx: Context, conversation_id: UUID, reason: str) -> Conversation:
        return self._change(ctx, conversation_id, reason, place=False)

    def _change(
        self, ctx: Context, conversation_id: UUID, reason: str, place: bool
    ) -> Conversation:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise Invalid(
                f"reason must be 1 to {MAX_REASON} characters",
                [{"field": "reason", "issue": f"must be 1 to {MAX_REASON} characters"}],
            )

        def attempt() -> Conversation:
            conversation = _conversation(self.app, ctx.tenant_id, conversation_id)
            meta = ctx.as_meta()
            changed = (
                conversation.place_hold(reason, meta)
                if place
                else conversation.release_hold(reason, meta)
            )
            if changed:
                self.app.save(conversation)
            return conversation

        return self.app.retrying(attempt)
