"""Answers from the audit view: entries by subject, actor, type and time; access; retention.

Every list is keyset-paginated on the event's position (an index leads with the
tenant and ends with the position), so a page costs the same at the millionth event
as at the first.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, exists, func, or_, select

from application.errors import Invalid
from domain.timestamps import iso
from projections.tables import (
    audit_access,
    audit_events,
    audit_messages,
    audit_subjects,
    legal_holds,
)


def entry(row: Any) -> dict[str, Any]:
    """An ``audit_events`` row in the shape of docs/API.md §5."""
    return {
        "position": int(row.position),
        "aggregateId": row.aggregate_id,
        "aggregateType": row.aggregate_type,
        "version": int(row.version),
        "type": row.type,
        "actorId": row.actor_id,
        "actorRole": row.actor_role,
        "tenantId": row.tenant_id,
        "occurredAt": iso(row.occurred_at),
        "data": dict(row.data),
    }


def encode_cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"a:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, position = raw.partition(":")
        if tag != "a" or not position.isdigit():
            raise ValueError(raw)
        return int(position)
    except (ValueError, UnicodeDecodeError):
        raise Invalid(
            "cursor is not a cursor this service gave out",
            [{"field": "cursor", "issue": "invalid cursor"}],
        ) from None


@dataclass(frozen=True)
class EventFilter:
    aggregate_id: str | None = None
    actor_id: str | None = None
    type: str | None = None
    start: datetime | None = None
    end: datetime | None = None

    def params(self) -> dict[str, str]:
        """What was asked, for the record of the auditor's query."""
        values = {
            "aggregateId": self.aggregate_id,
            "actorId": self.actor_id,
            "type": self.type,
            "from": iso(self.start) if self.start else None,
            "to": iso(self.end) if self.end else None,
        }
        return {k: v for k, v in values.items() if v is not None}


Page = tuple[list[dict[str, Any]], str | None]


class AuditQueriesSQL:
    """The audit view's answers; each takes the auditor's tenant first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _page(self, query: Select[Any], limit: int) -> Page:
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
        items = [entry(r) for r in rows[:limit]]
        cursor = encode_cursor(items[-1]["position"]) if len(rows) > limit else None
        return items, cursor

    def events(self, tenant_id: str, where: EventFilter, cursor: str | None, limit: int) -> Page:
        query = self._filtered(tenant_id, where).where(
            audit_events.c.position > decode_cursor(cursor)
        )
        return self._page(query.order_by(audit_events.c.position), limit)

    def _filtered(self, tenant_id: str | None, where: EventFilter) -> Select[Any]:
        e = audit_events.c
        query = select(audit_events)
        if tenant_id is not None:
            query = query.where(e.tenant_id == tenant_id)
        if where.aggregate_id:
            query = query.where(e.aggregate_id == where.aggregate_id)
        if where.actor_id:
            query = query.where(e.actor_id == where.actor_id)
        if where.type:
            query = query.where(e.type == where.type)
        if where.start:
            query = query.where(e.occurred_at >= where.start)
        if where.end:
            query = query.where(e.occurred_at < where.end)
        return query

    def trail(self, tenant_id: str, message_id: str, cursor: str | None, limit: int) -> Page | None:
        """The message's own events and every access record naming it; None if unknown."""
        mentioned = select(audit_subjects.c.position).where(
            audit_subjects.c.tenant_id == tenant_id, audit_subjects.c.subject_id == message_id
        )
        query = (
            select(audit_events)
            .where(
                audit_events.c.tenant_id == tenant_id,
                or_(
                    audit_events.c.aggregate_id == message_id,
                    audit_events.c.position.in_(mentioned),
                ),
                audit_events.c.position > decode_cursor(cursor),
            )
            .order_by(audit_events.c.position)
        )
        items, next_cursor = self._page(query, limit)
        if not items and cursor is None:
            return None
        return items, next_cursor

    def access(self, tenant_id: str, user_id: str, cursor: str | None, limit: int) -> Page:
        """Who viewed, read or tried to reach the user's messages (not the user themself)."""
        a = audit_access.c
        positions = (
            select(a.position)
            .where(
                a.tenant_id == tenant_id, a.owner_id == user_id, a.position > decode_cursor(cursor)
            )
            .group_by(a.position)
            .order_by(a.position)
            .limit(limit + 1)
        )
        with self.engine.connect() as conn:
            wanted = [int(p) for p in conn.execute(positions).scalars()]
            page = wanted[:limit]
            rows = conn.execute(
                select(audit_events)
                .where(audit_events.c.position.in_(page))
                .order_by(audit_events.c.position)
            ).all()
            ids = conn.execute(
                select(a.position, a.message_id)
                .where(a.tenant_id == tenant_id, a.owner_id == user_id, a.position.in_(page))
                .order_by(a.position, a.message_id)
            ).all()
        messages: dict[int, list[str]] = {}
        for position, mid in ids:
            messages.setdefault(int(position), []).append(mid)
        items = [{**entry(r), "messageIds": messages.get(int(r.position), [])} for r in rows]
        cursor_out = encode_cursor(page[-1]) if len(wanted) > limit else None
        return items, cursor_out

    def count(self, tenant_id: str | None, where: EventFilter) -> int:
        query = self._filtered(tenant_id, where).with_only_columns(func.count())
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def export(
        self, tenant_id: str | None, where: EventFilter, batch: int = 2000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every matching entry in position order, a batch at a time."""
        after = 0
        while True:
            query = (
                self._filtered(tenant_id, where)
                .where(audit_events.c.position > after)
                .order_by(audit_events.c.position)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield [entry(r) for r in rows]
            after = int(rows[-1].position)

    # ---- retention -------------------------------------------------------------------

    def expired(self, before: datetime, limit: int) -> list[tuple[str, str]]:
        """Encrypted messages created before ``before``, not shredded, not on legal hold."""
        m = audit_messages.c
        held = exists().where(
            and_(
                legal_holds.c.conversation_id == m.conversation_id,
                legal_holds.c.tenant_id == m.tenant_id,
            )
        )
        query = (
            select(m.message_id, m.tenant_id)
            .where(m.encrypted.is_(True), m.shredded_at.is_(None), m.created_at < before, ~held)
            .order_by(m.created_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(r.message_id, r.tenant_id) for r in conn.execute(query)]

    def holds(self, tenant_id: str) -> list[dict[str, Any]]:
        h = legal_holds.c
        query = select(legal_holds).where(h.tenant_id == tenant_id).order_by(h.placed_at)
        with self.engine.connect() as conn:
            return [
                {
                    "conversationId": r.conversation_id,
                    "reason": r.reason,
                    "placedBy": r.placed_by,
                    "placedAt": iso(r.placed_at),
                }
                for r in conn.execute(query)
            ]
