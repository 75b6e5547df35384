"""Idempotent sends: a repeated ``clientMessageId`` answers with the message it made,
told from a different send by a keyed digest kept in the key vault."""

from __future__ import annotations

import hmac
import json
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from application.errors import Conflict
from application.outgoing import Outgoing, SendResult
from application.policies import first_jobs
from application.ports import DIGEST_HOLDER, DIGEST_REF, DIGEST_ROW
from application.store import Store
from domain.events import Context
from domain.message import Message


class Idempotency(Store):
    """What a send with a ``clientMessageId`` already made, if anything."""

    def _existing_send(self, ctx: Context, mid: UUID, digest: str) -> SendResult | None:
        try:
            message: object = self.repository.get(mid)
        except AggregateNotFoundError:
            return None
        if (
            not isinstance(message, Message)
            or message.tenant_id != ctx.tenant_id
            or message.sender_id != ctx.actor_id
        ):
            raise Conflict("clientMessageId is already used")
        stored = self._stored_digest(message)
        if stored is None:
            raise Conflict(
                "clientMessageId was used by a message since shredded: send with a new one"
            )
        if not hmac.compare_digest(stored, digest):
            raise Conflict("clientMessageId was already used for a different message")
        return SendResult(message, first_jobs(message, ctx.correlation_id), created=False)

    def _stored_digest(self, message: Message) -> str | None:
        """The digest of the send that made ``message``: in the key vault under the
        reference its ``Created`` names (None once shredded), or, in events recorded
        before digests left the log, the digest itself."""
        reference = message.content_digest
        if not reference.startswith(DIGEST_REF):
            return reference or None
        holder = DIGEST_HOLDER + reference[len(DIGEST_REF) :]
        entry = self.crypto.vault.get(message.id, DIGEST_ROW, holder)
        return None if entry is None else entry.wrapped_key.decode("ascii")

    def _digest(self, target: str, outgoing: Outgoing) -> str:
        """What tells a repeated idempotent send from a different one: only a send with a
        ``clientMessageId`` has one. Others carry none, so that identical messages are
        not linkable by it. It is kept in the key vault, never in the event log, so that
        shredding the message destroys it with the keys."""
        if outgoing.client_message_id is None:
            return ""
        canonical = json.dumps(
            [target, outgoing.content, outgoing.sealed, outgoing.encrypted],
            sort_keys=True,
            separators=(",", ":"),
        )
        return self.crypto.keyring.digest(canonical.encode())
