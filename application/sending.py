"""Sending a message, to one other person or to a group conversation, on a thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.conversations import Conversations
from application.errors import EncryptionRequired, Invalid, NotFound
from application.idempotency import Idempotency
from application.outgoing import Outgoing, Participants, Pending, SendResult
from application.policies import first_jobs
from application.ports import (
    DIGEST_HOLDER,
    DIGEST_REF,
    DIGEST_ROW,
    SEARCH_HOLDER,
    SEARCH_ROW,
    Crypto,
    VaultEntry,
)
from application.sealing import Sealing
from application.store import KnownIds
from domain.conversation import DIRECT, GROUP, Conversation, direct_conversation_id
from domain.events import Context
from domain.ids import new_id
from domain.message import ENVELOPE_VERSION, Message, message_id_for

DIRECT_ONLY = "this conversation is direct: send a direct message to its other participant"


class Sending(Conversations, Sealing, Idempotency):
    """Direct and group sends, run on a thread (they may read the event store first)."""

    def __init__(self, crypto: Crypto, env: dict[str, str] | None = None) -> None:
        super().__init__(crypto, env)
        self._known_direct = KnownIds()
        # REQUIRE_ENCRYPTION: every tenant's messages must be encrypted (server-sealed or
        # end-to-end); a plain-text send is refused before anything is stored.
        self.require_encryption = False

    def send_direct(self, ctx: Context, recipient_id: str, outgoing: Outgoing) -> SendResult:
        self._check_direct(ctx, recipient_id)

        def build(mid: UUID, digest: str) -> Pending:
            return self._direct(ctx, recipient_id, outgoing, mid, digest)

        return self._send(ctx, f"direct:{recipient_id}", outgoing, build)

    def _check_direct(self, ctx: Context, recipient_id: str) -> None:
        if recipient_id == ctx.actor_id:
            raise Invalid("a direct message needs a recipient other than the sender")

    def _direct(
        self, ctx: Context, recipient_id: str, outgoing: Outgoing, mid: UUID, digest: str
    ) -> Pending:
        cid = direct_conversation_id(ctx.tenant_id, ctx.actor_id, recipient_id)
        pair = Participants(cid, [ctx.actor_id, recipient_id])
        pending = self._new_message(ctx, mid, pair, DIRECT, outgoing, digest)
        if cid not in self._known_direct:
            # Started in the same transaction as the message; should it exist already
            # (its id is the pair's), the message is saved alone.
            conversation = Conversation(
                tenant_id=ctx.tenant_id,
                kind=DIRECT,
                participant_ids=pair.participant_ids,
                title=None,
                meta=ctx.as_meta(),
            )
            pending.conversation = (cid, list(conversation.collect_events()))
        return pending

    def send_group(self, ctx: Context, conversation_id: UUID, outgoing: Outgoing) -> SendResult:
        target = f"group:{conversation_id}"

        def build(mid: UUID, digest: str) -> Pending:
            conversation = self.get_conversation(ctx, conversation_id)
            if conversation.kind != GROUP:
                raise Invalid(DIRECT_ONLY)
            return self._new_message(ctx, mid, conversation, GROUP, outgoing, digest)

        return self._send(ctx, target, outgoing, build)

    def _send(
        self,
        ctx: Context,
        target: str,
        outgoing: Outgoing,
        build: Callable[[UUID, str], Pending],
    ) -> SendResult:
        digest = self._digest(target, outgoing)
        if outgoing.client_message_id is None:
            mid = new_id()
        else:
            mid = message_id_for(ctx.tenant_id, ctx.actor_id, outgoing.client_message_id)
            existing = self._existing_send(ctx, mid, digest)
            if existing is not None:
                return existing
        pending = build(mid, digest)
        if pending.vault:
            self.crypto.vault.put(pending.vault)
        events = list(pending.message.collect_events())
        try:
            self._save_new(events, pending.conversation)
        except IntegrityError:
            existing = self._existing_send(ctx, mid, digest)
            if existing is None:
                raise
            return existing
        message = pending.message
        return SendResult(message, first_jobs(message, ctx.correlation_id), created=True)

    def _save_new(self, events: list[Any], conversation: tuple[UUID, list[Any]] | None) -> None:
        """Save a new message's events, with those of its new conversation if any."""
        if conversation is None:
            self.save(*events)
            return
        cid, started = conversation
        try:
            self.save(*started, *events)
        except IntegrityError:
            # The conversation exists, or the message does (a repeated clientMessageId):
            # saved alone, the message tells which.
            self.save(*events)
        self._known_direct.remember(cid)

    def _new_message(
        self,
        ctx: Context,
        mid: UUID,
        conversation: Participants | Conversation,
        kind: str,
        outgoing: Outgoing,
        digest: str,
    ) -> Pending:
        if ctx.actor_id not in conversation.participant_ids:
            raise NotFound("conversation not found")
        recipients = [p for p in conversation.participant_ids if p != ctx.actor_id]
        if not recipients:
            raise Invalid("the conversation has no other participant to send to")
        meta = ctx.as_meta()
        if outgoing.priority:
            meta["priority"] = outgoing.priority
        encrypted = outgoing.encrypted or outgoing.sealed is not None
        if not encrypted and self.require_encryption:
            raise EncryptionRequired(
                "this service requires every message to be encrypted (REQUIRE_ENCRYPTION): "
                'send "encrypted": true, or "sealed" content',
                [{"field": "encrypted", "issue": "must be true, or the content sealed"}],
            )
        sealed: dict[str, Any] | None = None
        vault: list[VaultEntry] = []
        search_tokens: list[str] | None = None
        if outgoing.sealed is not None:
            sealed, vault = self._client_sealed(ctx, mid, conversation, outgoing.sealed)
        elif encrypted:
            self._require_keys(ctx.tenant_id, [ctx.actor_id, *recipients])
            sealed, vault = self._server_seal(mid, outgoing.content or "")
            search_tokens = self._search_tokens(ctx.tenant_id, outgoing)
        # What is derived from the content goes in the key vault, deleted by shredding,
        # beside the keys (in their write: no round trip of its own), never in the log.
        # A send with a clientMessageId names its rows by a random reference, so that
        # a concurrent send of the same id cannot overwrite the winner's.
        reference = new_id().hex if digest else ""
        if digest:
            holder = DIGEST_HOLDER + reference
            vault.append(VaultEntry(mid, holder, "hmac", digest.encode(), DIGEST_ROW))
        if search_tokens:
            tokens = "\n".join(search_tokens).encode()
            holder = SEARCH_HOLDER + reference
            vault.append(VaultEntry(mid, holder, "blind-index", tokens, SEARCH_ROW))
        message = Message(
            search_tokens=None,
            id=mid,
            tenant_id=ctx.tenant_id,
            conversation_id=conversation.id,
            sender_id=ctx.actor_id,
            recipient_ids=recipients,
            kind=kind,
            encrypted=encrypted,
            notify=outgoing.notify,
            index=outgoing.index,
            content=None if encrypted else outgoing.content,
            sealed=sealed,
            end_to_end=outgoing.sealed is not None,
            content_digest=DIGEST_REF + reference if digest else "",
            client_message_id=outgoing.client_message_id,
            meta=meta,
            send_at=outgoing.send_at,
        )
        if outgoing.send_at is not None:
            # Sealed for its recipients (or its client-sealed metadata recorded) when due.
            return Pending(message, vault)
        if outgoing.sealed is not None:
            assert sealed is not None
            public = {"iv": sealed.get("iv"), "authTag": sealed.get("authTag"), "keyId": None}
            message.record_encryption(public, ENVELOPE_VERSION, meta=meta)
        elif encrypted:
            message.queue_encryption(meta=meta)
        return Pending(message, vault)
