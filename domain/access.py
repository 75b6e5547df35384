"""The Access record: one audited request that changed nothing but must be accounted for.

Reading a message, its envelope or a page of a conversation, a refused attempt on
someone else's message and an auditor's query each leave one record. A record is an
aggregate of its own, born and finished with one event: writing it reads nothing first
and cannot conflict with any other writer, so auditing a request costs one insert.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.ids import new_id

_T = "courier.access:"

PAGE = "conversation.page"
SEARCH = "search"
MESSAGE = "message"  # GET /api/messages/{id}
ENVELOPE = "envelope"  # GET /api/messages/{id}/envelope
BACKLOG = "ws.backlog"  # a page of the WebSocket's ``since`` backlog


class Access(Aggregate):
    """Who looked at (or tried to look at) what, and what came of it."""

    TOPIC = _T + "Access"

    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        """Base of the three kinds of record; never stored itself."""

        TOPIC = _T + "Created"
        tenant_id: str

    class Viewed(Created):
        """A read showed these messages to the actor: one event per page of a listing,
        search answer, message or envelope fetched."""

        TOPIC = _T + "Viewed"
        what: str
        conversation_id: str | None
        message_ids: list[str]

    class Denied(Created):
        """The actor asked for something they may not see; they were told 403 or 404."""

        TOPIC = _T + "Denied"
        action: str
        subject_type: str
        subject_id: str
        status: int

    class AuditQueried(Created):
        """An auditor asked the audit trail a question."""

        TOPIC = _T + "AuditQueried"
        query: str
        params: dict[str, str]
        results: int

    def __init__(self, *, tenant_id: str, meta: dict[str, str]) -> None:
        self.tenant_id = tenant_id
        self.actor_id = meta.get("actor_id", "")

    @classmethod
    def viewed(
        cls,
        meta: dict[str, str],
        what: str,
        conversation_id: UUID | None,
        message_ids: list[str],
    ) -> Access:
        return cls._record(
            cls.Viewed,
            meta,
            what=what,
            conversation_id=str(conversation_id) if conversation_id else None,
            message_ids=list(message_ids),
        )

    @classmethod
    def denied(
        cls, meta: dict[str, str], action: str, subject_type: str, subject_id: str, status: int
    ) -> Access:
        return cls._record(
            cls.Denied,
            meta,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            status=status,
        )

    @classmethod
    def audit_queried(
        cls, meta: dict[str, str], query: str, params: dict[str, str], results: int
    ) -> Access:
        return cls._record(
            cls.AuditQueried, meta, query=query, params=dict(params), results=results
        )

    @classmethod
    def _record(cls, kind: type[Created], meta: dict[str, str], **facts: Any) -> Access:
        return cls._create(kind, id=new_id(), tenant_id=meta["tenant_id"], meta=meta, **facts)
