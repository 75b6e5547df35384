"""The `messages` view's answers (its writer is ``projections.messages_view``)."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Engine, and_, exists, or_, select

from application.errors import Invalid
from application.ports import BlindIndex
from application.search import query_words
from domain.message import BATCH_SIZE
from domain.timestamps import iso
from projections.search import matching_ids
from projections.tables import message_recipients, messages


def derive_status(row: dict[str, Any]) -> str:
    """The same rule as ``Message.status``, over the row's columns."""
    if row["status"] == "cancelled":
        return "cancelled"
    if row.get("send_at") is not None and not (
        row["delivered_count"]
        or row["failures"]
        or row["indexed"]
        or row["encryption_metadata"] is not None
    ):
        return "scheduled"
    if row["delivered_count"] >= row["recipient_count"]:
        return "delivered"
    if row["failures"]:
        return "failed"
    if row["delivered_count"] > 0:
        return "delivering"
    if row["is_encrypted"] and row["encryption_metadata"] is None:
        return "encrypting"
    if row["is_encrypted"]:
        return "encrypted"
    return "accepted"


def row_to_message(row: Any) -> dict[str, Any]:
    """A `messages` row in the shape of docs/API.md §5."""
    batches = max(1, math.ceil(row.recipient_count / BATCH_SIZE))
    delivered = row.delivered_count >= row.recipient_count
    metadata = row.encryption_metadata
    return {
        "id": row.id,
        "conversationId": row.conversation_id,
        "senderId": row.sender_id,
        "recipientIds": list(row.recipient_ids),
        "type": row.type,
        "content": None if row.is_encrypted else row.content,
        "isEncrypted": bool(row.is_encrypted),
        "encryptionMetadata": dict(metadata) if metadata is not None else None,
        "encryptionVersion": row.encryption_version,
        "status": row.status,
        "deliveredCount": row.delivered_count,
        "recipientCount": row.recipient_count,
        "notified": bool(row.notify and delivered and len(row.notified_batches) >= batches),
        "indexed": bool(row.indexed),
        "sendAt": iso(row.send_at) if row.send_at is not None else None,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }


class MessageQueriesSQL:
    """The read side's answers (implements ``application.ports.MessageQueries``)."""

    def __init__(self, engine: Engine, blind_index: BlindIndex | None = None) -> None:
        self.engine = engine
        self.blind_index = blind_index

    def conversation_messages(
        self, tenant_id: str, user_id: str, conversation_id: UUID, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the conversation's messages that ``user_id`` sent or received: one
        who joined later does not see what was sent before (docs/API.md §3)."""
        query = select(messages).where(
            messages.c.tenant_id == tenant_id,
            messages.c.conversation_id == str(conversation_id),
            visible_to(user_id),
        )
        # Others' scheduled sends appear once they begin; cancelled ones never.
        query = query.where(
            messages.c.send_at.is_(None)
            | (messages.c.sender_id == user_id)
            | messages.c.status.notin_(("scheduled", "cancelled"))
        )
        cursor = decode_cursor(before) if before else None
        if before and cursor is None:
            raise Invalid(
                "before is not a cursor this service gave out",
                [{"field": "before", "issue": "invalid cursor"}],
            )
        if cursor is not None:
            created, mid = cursor
            query = query.where(
                or_(
                    messages.c.created_at < created,
                    and_(messages.c.created_at == created, messages.c.id < mid),
                )
            )
        query = query.order_by(messages.c.created_at.desc(), messages.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = [row_to_message(r) for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return items, next_cursor

    def delivered_since(
        self, tenant_id: str, user_id: str, since: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        query = (
            select(messages, message_recipients.c.delivered_position)
            .join(message_recipients, message_recipients.c.message_id == messages.c.id)
            .where(
                message_recipients.c.tenant_id == tenant_id,
                message_recipients.c.recipient_id == user_id,
                message_recipients.c.delivered_position > since,
            )
            .order_by(message_recipients.c.delivered_position)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(int(r.delivered_position), row_to_message(r)) for r in rows]

    def search(
        self, tenant_id: str, user_id: str, query: str, conversation_id: UUID | None, limit: int
    ) -> list[dict[str, Any]]:
        """Messages the caller sent or received holding every word of ``query``."""
        terms = query_words(query)
        if not terms:
            return []
        tokens = self.blind_index.tokens(tenant_id, terms) if self.blind_index else []
        ids = matching_ids(
            self.engine.dialect.name, tenant_id, user_id, terms, tokens, conversation_id
        )
        stmt = (
            select(messages)
            .where(messages.c.tenant_id == tenant_id, messages.c.id.in_(ids))
            .order_by(messages.c.created_at.desc(), messages.c.id.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [row_to_message(r) for r in conn.execute(stmt).all()]

    def message_status(self, message_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(messages.c.status).where(messages.c.id == message_id)
            ).scalar()
        return str(value) if value is not None else None


def visible_to(user_id: str) -> ColumnElement[bool]:
    """The one visibility rule over ``messages`` rows: sent by ``user_id``, or with
    ``user_id`` among its recipients (``Message.may_see``)."""
    received = exists().where(
        message_recipients.c.message_id == messages.c.id,
        message_recipients.c.recipient_id == user_id,
    )
    return or_(messages.c.sender_id == user_id, received)


def encode_cursor(row: Any) -> str:
    raw = f"{iso(row.created_at)}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, mid = raw.split("|", 1)
        return datetime.fromisoformat(created.replace("Z", "+00:00")), str(UUID(mid))
    except (ValueError, UnicodeDecodeError):
        return None
