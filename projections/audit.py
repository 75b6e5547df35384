"""The `audit` view: every event as an audit entry, indexed by subject, actor and time.

An entry says who (actor and role), what (aggregate, type, facts), when, where (the
request's source address and user agent) and as part of which request (correlation
and causation ids). Content never reaches it: see ``CONTENT_FIELDS``. Besides the
entries the view keeps who owns each message (for the accounting of access), the
legal holds, and when each message was shredded (for retention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, singledispatchmethod
from typing import Any
from uuid import UUID

from sqlalchemy import Connection, delete, select, update

from domain.access import Access
from domain.conversation import DIRECT, Conversation
from domain.message import Message
from infrastructure.storage.bulk import append_rows
from projections.dispatch import handler_of
from projections.tables import (
    audit_access,
    audit_events,
    audit_messages,
    audit_subjects,
    legal_holds,
)

NAME = "audit"
# Event fields that hold or betray content (free text, ciphertext, a digest of the
# plaintext, blind-index tokens of its words, a key's PEM): left out of every entry.
CONTENT_FIELDS = frozenset(
    {"content", "sealed", "content_digest", "search_tokens", "title", "public_key_pem"}
)
_ENVELOPE = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})
_LEFT_OUT = _ENVELOPE | CONTENT_FIELDS | {"meta"}  # the fields an entry's data leaves out
_CONTEXT = (
    ("correlation_id", "correlationId"),
    ("causation_id", "causationId"),
    ("source_ip", "sourceIp"),
    ("user_agent", "userAgent"),
)
_IN_CHUNK = 500
Owners = dict[str, tuple[str, list[str]]]  # message id -> (tenant, owner ids)


@cache
def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_AS_IS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """A JSON-ready copy of an event's field value."""
    if type(value) in _AS_IS:  # most values: checked first, as replays call this a lot
        return value
    if isinstance(value, list | tuple):
        return [v if type(v) in _AS_IS else plain(v) for v in value]
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def kinds(event: Any) -> tuple[str, str]:
    """(aggregate type, event type), e.g. ("Message", "Created")."""
    aggregate, _, kind = type(event).__qualname__.rpartition(".")
    return aggregate or "Unknown", kind


def entry_row(position: int, event: Any) -> dict[str, Any]:
    """The ``audit_events`` row of one event."""
    meta: dict[str, str] = dict(getattr(event, "meta", None) or {})
    data = {camel(key): plain(value) for key, value in vars(event).items() if key not in _LEFT_OUT}
    context = {out: meta[key] for key, out in _CONTEXT if meta.get(key)}
    if context:
        data["context"] = context
    aggregate_type, kind = kinds(event)
    return {
        "position": position,
        "tenant_id": meta.get("tenant_id") or str(getattr(event, "tenant_id", "") or ""),
        "aggregate_id": str(event.originator_id),
        "aggregate_type": aggregate_type,
        "version": int(event.originator_version),
        "type": kind,
        "actor_id": meta.get("actor_id") or "unknown",
        "actor_role": meta.get("actor_role") or "unknown",
        "occurred_at": event.timestamp,
        "data": data,
    }


@dataclass
class AuditRows:
    """What one batch of events adds, written at the end in a few statements."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    subjects: set[tuple[str, str, int]] = field(default_factory=set)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    shredded: list[tuple[str, datetime]] = field(default_factory=list)
    holds: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    accesses: list[tuple[str, int, str, str]] = field(
        default_factory=list
    )  # tenant, pos, mid, actor


class AuditView:
    """Writes the audit index; one handler per event type that adds more than an entry."""

    name = NAME

    def apply(self, event: Any, conn: Connection, position: int) -> None:
        self.apply_many([(position, event)], conn)

    def apply_many(self, batch: Sequence[tuple[int, Any]], conn: Connection) -> None:
        self._write(conn, self.rows_of(batch))

    def rows_of(self, batch: Sequence[tuple[int, Any]]) -> AuditRows:
        """What the batch adds, before it is written (also what ``audit_check`` expects)."""
        work = AuditRows()
        for position, event in batch:
            entry = entry_row(position, event)
            work.entries.append(entry)
            _collect(event)(self, event, position, entry, work)
        return work

    @singledispatchmethod
    def collect(self, event: Any, position: int, entry: dict[str, Any], work: AuditRows) -> None:
        """Most events are an entry and nothing more."""

    @collect.register
    def _(
        self, event: Message.Created, position: int, entry: dict[str, Any], work: AuditRows
    ) -> None:
        owners = [event.sender_id, *(event.recipient_ids if event.kind == DIRECT else [])]
        work.messages[entry["aggregate_id"]] = {
            "message_id": entry["aggregate_id"],
            "tenant_id": entry["tenant_id"],
            "conversation_id": str(event.conversation_id),
            "owner_ids": owners,
            "encrypted": bool(event.encrypted),
            "created_at": event.timestamp,
            "shredded_at": None,
            "position": position,
        }

    @collect.register
    def _(
        self, event: Message.Viewed, position: int, entry: dict[str, Any], work: AuditRows
    ) -> None:
        work.accesses.append((entry["tenant_id"], position, entry["aggregate_id"], event.viewer_id))

    @collect.register
    def _(self, event: Message.Read, position: int, entry: dict[str, Any], work: AuditRows) -> None:
        work.accesses.append((entry["tenant_id"], position, entry["aggregate_id"], event.reader_id))

    @collect.register
    def _(
        self, event: Message.Shredded, position: int, entry: dict[str, Any], work: AuditRows
    ) -> None:
        work.shredded.append((entry["aggregate_id"], event.timestamp))

    @collect.register
    def _(
        self, event: Access.Viewed, position: int, entry: dict[str, Any], work: AuditRows
    ) -> None:
        tenant, actor = entry["tenant_id"], entry["actor_id"]
        if event.conversation_id:
            work.subjects.add((tenant, event.conversation_id, position))
        for mid in event.message_ids:
            work.subjects.add((tenant, mid, position))
            work.accesses.append((tenant, position, mid, actor))

    @collect.register
    def _(
        self, event: Access.Denied, position: int, entry: dict[str, Any], work: AuditRows
    ) -> None:
        tenant = entry["tenant_id"]
        work.subjects.add((tenant, event.subject_id, position))
        if event.subject_type == "message":
            work.accesses.append((tenant, position, event.subject_id, entry["actor_id"]))

    @collect.register
    def _(
        self,
        event: Conversation.LegalHoldPlaced,
        position: int,
        entry: dict[str, Any],
        work: AuditRows,
    ) -> None:
        hold = {
            "conversation_id": entry["aggregate_id"],
            "tenant_id": entry["tenant_id"],
            "reason": event.reason,
            "placed_by": entry["actor_id"],
            "placed_at": event.timestamp,
            "position": position,
        }
        work.holds.append((entry["aggregate_id"], hold))

    @collect.register
    def _(
        self,
        event: Conversation.LegalHoldReleased,
        position: int,
        entry: dict[str, Any],
        work: AuditRows,
    ) -> None:
        work.holds.append((entry["aggregate_id"], None))

    # ---- writing ---------------------------------------------------------------

    def _write(self, conn: Connection, work: AuditRows) -> None:
        # Each message is created once and each access row belongs to one position: the
        # view's position moves in the same transaction, so no batch is written twice
        # and these are plain appends.
        append_rows(conn, audit_messages, list(work.messages.values()))
        for mid, at in work.shredded:
            conn.execute(
                update(audit_messages)
                .where(audit_messages.c.message_id == mid, audit_messages.c.shredded_at.is_(None))
                .values(shredded_at=at)
            )
        for cid, hold in work.holds:
            conn.execute(delete(legal_holds).where(legal_holds.c.conversation_id == cid))
            if hold is not None:
                conn.execute(legal_holds.insert(), [hold])
        append_rows(conn, audit_events, work.entries)
        rows = [{"tenant_id": t, "subject_id": s, "position": p} for t, s, p in work.subjects]
        append_rows(conn, audit_subjects, rows)
        append_rows(conn, audit_access, self.access_rows(conn, work))

    def access_rows(
        self, conn: Connection, work: AuditRows, known: Owners | None = None
    ) -> list[dict[str, Any]]:
        """One row per owner of each message accessed, but the accessor themself.

        Owners come from the batch's own messages, then ``known``, then ``audit_messages``.
        """
        if not work.accesses:
            return []
        owners = {mid: (m["tenant_id"], m["owner_ids"]) for mid, m in work.messages.items()}
        if known:
            for _, _, mid, _ in work.accesses:
                if mid not in owners and mid in known:
                    owners[mid] = known[mid]
        unknown = sorted({mid for _, _, mid, _ in work.accesses if mid not in owners})
        for start in range(0, len(unknown), _IN_CHUNK):
            chunk = unknown[start : start + _IN_CHUNK]
            query = select(
                audit_messages.c.message_id, audit_messages.c.tenant_id, audit_messages.c.owner_ids
            ).where(audit_messages.c.message_id.in_(chunk))
            for row in conn.execute(query):
                owners[row.message_id] = (row.tenant_id, list(row.owner_ids))
        rows: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        for tenant, position, mid, actor in work.accesses:
            owned = owners.get(mid)
            if owned is None or owned[0] != tenant:
                continue  # no such message in this tenant: the entry itself records the try
            for owner in owned[1]:
                if owner != actor:
                    key = (tenant, owner, position, mid)
                    rows[key] = {
                        "tenant_id": tenant,
                        "owner_id": owner,
                        "position": position,
                        "message_id": mid,
                    }
        return list(rows.values())


_collect = handler_of(AuditView, "collect")
