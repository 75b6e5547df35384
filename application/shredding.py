"""Shredding: destroying a message's data keys (and what is derived from its content)
so that its content can never be read again; a legal hold refuses it."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from application.errors import Invalid, NotFound, OnLegalHold
from application.store import Store
from domain.conversation import Conversation
from domain.events import Context
from domain.message import Message

SHRED_REASONS = ("erasure", "retention")


@dataclass(frozen=True)
class ShredReport:
    """A message shredded: why, and how many of its wrapped keys this call destroyed."""

    message_id: UUID
    reason: str
    keys_destroyed: int


class Shredding(Store):
    """Destroying an encrypted message's keys, unless its conversation is on hold."""

    def _check_no_hold(self, ctx: Context, message: Message) -> None:
        """Refuse to destroy the content of a message whose conversation is on hold."""
        try:
            conversation = self._get(Conversation, message.conversation_id, ctx.tenant_id)
        except NotFound:
            return
        if conversation.on_hold:
            raise _hold_refusal()

    def shred(self, ctx: Context, message_id: UUID, reason: str) -> ShredReport:
        """Destroy a message's wrapped data keys and record ``Shredded`` (docs/API.md §4.2, §9).

        The keys go first: should recording fail, the content is unreadable all the
        same and a repeat finishes the job. The events stay, for the audit trail.
        Repeating it is harmless. A conversation under legal hold refuses it
        (``OnLegalHold``, 409), as it stops retention.
        """
        if reason not in SHRED_REASONS:
            raise Invalid(
                f"reason must be one of {', '.join(SHRED_REASONS)}",
                [{"field": "reason", "issue": f"must be one of {', '.join(SHRED_REASONS)}"}],
            )
        destroyed = 0

        def attempt() -> Message:
            nonlocal destroyed
            message = self._get(Message, message_id, ctx.tenant_id)
            if not message.encrypted:
                raise Invalid(
                    "only an encrypted message has a content key to destroy; a plain-text "
                    "message's content is part of the event log"
                )
            if not message.shredded:
                self._check_no_hold(ctx, message)
            destroyed += self.crypto.vault.shred(message.id)
            if not message.shredded:
                message.shred(reason=reason, meta=ctx.as_meta())
                self.save(message)
            return message

        message = self.retrying(attempt)
        # A key an encryption job wrote while Shredded was being saved goes now; one
        # written later finds the message shredded and is destroyed by that job.
        destroyed += self.crypto.vault.shred(message.id)
        return ShredReport(message.id, reason, destroyed)


def _hold_refusal() -> OnLegalHold:
    return OnLegalHold(
        "the message's conversation is under a legal hold: its content cannot be shredded "
        "until an auditor releases the hold",
        [{"field": "conversationId", "issue": "under legal hold"}],
    )
