"""The `messages` view: conversations, messages and per-recipient delivery rows."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from functools import singledispatchmethod
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from application.errors import Invalid
from domain.conversation import Conversation
from domain.message import BATCH_SIZE, Message
from projections.tables import (
    conversation_participants,
    conversations,
    failed_jobs,
    message_recipients,
    messages,
)

DELIVERY_QUEUE = "MESSAGE_DELIVERY"
ENCRYPTION_QUEUE = "MESSAGE_ENCRYPTION"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    return value.isoformat().replace("+00:00", "Z")


def derive_status(row: dict[str, Any]) -> str:
    """The same rule as ``Message.status``, over the row's columns."""
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
    """A `messages` row in the shape of SPEC §4."""
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
        "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.updated_at),
    }


def _insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class MessagesView:
    """Applies conversation and message events to the read tables."""

    name = "messages"

    @singledispatchmethod
    def apply(self, event: Any, conn: Connection, position: int) -> None:
        """Events this view does not show are skipped."""

    # ---- conversations ---------------------------------------------------

    @apply.register
    def _(self, event: Conversation.Started, conn: Connection, position: int) -> None:
        cid = str(event.originator_id)
        conn.execute(
            _insert(conn)(conversations)
            .values(
                id=cid,
                tenant_id=event.tenant_id,
                type=event.kind,
                title=event.title,
                participant_ids=list(dict.fromkeys(event.participant_ids)),
                created_at=event.timestamp,
                updated_at=event.timestamp,
            )
            .on_conflict_do_nothing()
        )
        self._add_participants(conn, cid, event.tenant_id, list(event.participant_ids))

    @apply.register
    def _(self, event: Conversation.ParticipantsAdded, conn: Connection, position: int) -> None:
        cid = str(event.originator_id)
        row = conn.execute(select(conversations).where(conversations.c.id == cid)).one()
        people = list(dict.fromkeys([*row.participant_ids, *event.user_ids]))
        conn.execute(
            update(conversations)
            .where(conversations.c.id == cid)
            .values(participant_ids=people, updated_at=event.timestamp)
        )
        self._add_participants(conn, cid, row.tenant_id, list(event.user_ids))

    @apply.register
    def _(self, event: Conversation.ParticipantRemoved, conn: Connection, position: int) -> None:
        cid = str(event.originator_id)
        row = conn.execute(select(conversations).where(conversations.c.id == cid)).one()
        people = [p for p in row.participant_ids if p != event.user_id]
        conn.execute(
            update(conversations)
            .where(conversations.c.id == cid)
            .values(participant_ids=people, updated_at=event.timestamp)
        )
        conn.execute(
            delete(conversation_participants).where(
                conversation_participants.c.conversation_id == cid,
                conversation_participants.c.user_id == event.user_id,
            )
        )

    def _add_participants(self, conn: Connection, cid: str, tenant: str, users: list[str]) -> None:
        rows = [
            {"conversation_id": cid, "user_id": u, "tenant_id": tenant}
            for u in dict.fromkeys(users)
        ]
        if rows:
            conn.execute(_insert(conn)(conversation_participants).on_conflict_do_nothing(), rows)

    # ---- messages ----------------------------------------------------------

    @apply.register
    def _(self, event: Message.Created, conn: Connection, position: int) -> None:
        mid = str(event.originator_id)
        tenant = event.meta.get("tenant_id", event.tenant_id)
        recipients = list(event.recipient_ids)
        conn.execute(
            _insert(conn)(messages)
            .values(
                id=mid,
                tenant_id=tenant,
                conversation_id=str(event.conversation_id),
                sender_id=event.sender_id,
                recipient_ids=recipients,
                type=event.kind,
                content=None if event.encrypted else event.content,
                is_encrypted=bool(event.encrypted),
                encryption_metadata=None,
                encryption_version="v1" if event.encrypted else None,
                status="encrypting" if event.encrypted else "accepted",
                delivered_count=0,
                recipient_count=len(recipients),
                notified=False,
                indexed=False,
                notify=bool(event.notify),
                index_requested=bool(event.index),
                failures=[],
                notified_batches=[],
                created_at=event.timestamp,
                updated_at=event.timestamp,
                position=position,
            )
            .on_conflict_do_nothing()
        )
        rows = [
            {
                "message_id": mid,
                "recipient_id": user,
                "tenant_id": tenant,
                "batch": str(index // BATCH_SIZE),
            }
            for index, user in enumerate(recipients)
        ]
        if rows:
            conn.execute(_insert(conn)(message_recipients).on_conflict_do_nothing(), rows)

    def _change(self, conn: Connection, position: int, event: Any, **values: Any) -> None:
        mid = str(event.originator_id)
        row = conn.execute(select(messages).where(messages.c.id == mid)).mappings().one()
        merged = {**row, **values}
        merged["status"] = derive_status(merged)
        merged["updated_at"] = event.timestamp
        merged["position"] = position
        merged["notified"] = bool(
            merged["notify"]
            and merged["delivered_count"] >= merged["recipient_count"]
            and len(merged["notified_batches"])
            >= max(1, math.ceil(merged["recipient_count"] / BATCH_SIZE))
        )
        changed = {k: v for k, v in merged.items() if k != "id"}
        conn.execute(update(messages).where(messages.c.id == mid).values(**changed))

    def _failures(self, conn: Connection, event: Any) -> list[dict[str, Any]]:
        mid = str(event.originator_id)
        value = conn.execute(select(messages.c.failures).where(messages.c.id == mid)).scalar_one()
        return list(value)

    @apply.register
    def _(self, event: Message.Encrypted, conn: Connection, position: int) -> None:
        failures = [f for f in self._failures(conn, event) if f["queue"] != ENCRYPTION_QUEUE]
        metadata = dict(event.metadata)
        self._change(
            conn,
            position,
            event,
            encryption_metadata={
                "algorithm": "AES-256-GCM",
                "iv": metadata.get("iv"),
                "authTag": metadata.get("authTag"),
                "keyId": metadata.get("keyId"),
            },
            encryption_version=event.version,
            failures=failures,
        )

    @apply.register
    def _(self, event: Message.Delivered, conn: Connection, position: int) -> None:
        mid = str(event.originator_id)
        users = [*event.online, *event.offline]
        online = set(event.online)
        for user in users:
            conn.execute(
                update(message_recipients)
                .where(
                    message_recipients.c.message_id == mid,
                    message_recipients.c.recipient_id == user,
                )
                .values(
                    online=user in online,
                    delivered_at=event.timestamp,
                    delivered_position=position,
                )
            )
        row = conn.execute(
            select(messages.c.delivered_count).where(messages.c.id == mid)
        ).scalar_one()
        delivered_job = f"{DELIVERY_QUEUE}:{mid}:b{event.batch}"
        failures = [f for f in self._failures(conn, event) if f["job_id"] != delivered_job]
        self._change(conn, position, event, delivered_count=row + len(users), failures=failures)

    @apply.register
    def _(self, event: Message.Notified, conn: Connection, position: int) -> None:
        mid = str(event.originator_id)
        batches = conn.execute(
            select(messages.c.notified_batches).where(messages.c.id == mid)
        ).scalar_one()
        if event.batch not in batches:
            job_id = f"MESSAGE_NOTIFICATION:{mid}:b{event.batch}"
            failures = [f for f in self._failures(conn, event) if f["job_id"] != job_id]
            self._change(
                conn, position, event, notified_batches=[*batches, event.batch], failures=failures
            )

    @apply.register
    def _(self, event: Message.Indexed, conn: Connection, position: int) -> None:
        failures = [f for f in self._failures(conn, event) if f["queue"] != "MESSAGE_INDEXING"]
        self._change(conn, position, event, indexed=True, failures=failures)

    @apply.register
    def _(self, event: Message.ProcessingFailed, conn: Connection, position: int) -> None:
        failures = [f for f in self._failures(conn, event) if f["job_id"] != event.job_id]
        failure = {"queue": event.queue, "job_id": event.job_id, "attempts": event.attempts}
        self._change(conn, position, event, failures=[*failures, failure])
        values = {
            "job_id": event.job_id,
            "queue": event.queue,
            "message_id": str(event.originator_id),
            "tenant_id": event.meta.get("tenant_id", ""),
            "attempts": event.attempts,
            "error": event.error,
            "failed_at": event.timestamp,
            "position": position,
        }
        conn.execute(
            _insert(conn)(failed_jobs)
            .values(**values)
            .on_conflict_do_update(index_elements=["job_id"], set_=values)
        )

    @apply.register
    def _(self, event: Message.RetryRequested, conn: Connection, position: int) -> None:
        failures = [f for f in self._failures(conn, event) if f["job_id"] != event.job_id]
        self._change(conn, position, event, failures=failures)
        conn.execute(delete(failed_jobs).where(failed_jobs.c.job_id == event.job_id))

    @apply.register
    def _(self, event: Message.Read, conn: Connection, position: int) -> None:
        conn.execute(
            update(message_recipients)
            .where(
                message_recipients.c.message_id == str(event.originator_id),
                message_recipients.c.recipient_id == event.reader_id,
            )
            .values(read_at=event.timestamp)
        )


class MessageQueriesSQL:
    """The read side's answers (implements ``application.ports.MessageQueries``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def conversation_messages(
        self, tenant_id: str, conversation_id: UUID, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        query = select(messages).where(
            messages.c.tenant_id == tenant_id, messages.c.conversation_id == str(conversation_id)
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
        visible = select(conversation_participants.c.conversation_id).where(
            conversation_participants.c.tenant_id == tenant_id,
            conversation_participants.c.user_id == user_id,
        )
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = select(messages).where(
            messages.c.tenant_id == tenant_id,
            messages.c.conversation_id.in_(visible),
            messages.c.is_encrypted.is_(False),
            messages.c.indexed.is_(True),
            func.lower(messages.c.content).like(pattern.lower(), escape="\\"),
        )
        if conversation_id is not None:
            stmt = stmt.where(messages.c.conversation_id == str(conversation_id))
        stmt = stmt.order_by(messages.c.created_at.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            row_to_message(r) for r in rows if user_id == r.sender_id or user_id in r.recipient_ids
        ]

    def message_status(self, message_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(messages.c.status).where(messages.c.id == message_id)
            ).scalar()
        return str(value) if value is not None else None


def encode_cursor(row: Any) -> str:
    raw = f"{_iso(row.created_at)}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, mid = raw.split("|", 1)
        return datetime.fromisoformat(created.replace("Z", "+00:00")), str(UUID(mid))
    except (ValueError, UnicodeDecodeError):
        return None
