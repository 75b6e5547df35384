"""The audit tables checked against the log: what auditors read is what the log says.

The audit view's rows are made from the events alone (``projections/audit.py``). Here
they are made again from a range of the chained log and compared with the stored
``audit_events``, ``audit_subjects`` and ``audit_access`` rows of that range: a row
changed, deleted or added names its position. ``legal_holds`` and ``audit_messages``
are state that later events change; they are not compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, func, select

from projections.audit import AuditView, Owners
from projections.tables import audit_access, audit_events, audit_subjects

Mismatch = tuple[int, str]  # (position, what is wrong there)

_ENTRY = (
    "tenant_id",
    "aggregate_id",
    "aggregate_type",
    "version",
    "type",
    "actor_id",
    "actor_role",
)


def _utc(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def normal(row: Mapping[str, Any]) -> dict[str, Any]:
    """An entry as comparable values: times in UTC, ``data`` as its JSON reads back."""
    found = {key: row[key] for key in _ENTRY}
    found["version"] = int(found["version"])
    found["occurred_at"] = _utc(row["occurred_at"])
    found["data"] = json.loads(json.dumps(row["data"], sort_keys=True, default=str))
    return found


class AuditCheck:
    """Compares the audit tables with the log, one range of positions at a time, in order.

    It remembers the owners of the messages it has seen, so a walk from the start
    takes them from the log; a walk from the middle reads older owners from
    ``audit_messages``.
    """

    def __init__(self) -> None:
        self.view = AuditView()
        self.owners: Owners = {}

    def compare(
        self, conn: Connection, after: int, stop: int, events: Sequence[tuple[int, Any]]
    ) -> Mismatch | None:
        """The first mismatch in positions (after, stop]; ``events`` are all of them."""
        work = self.view.rows_of(events)
        access = self.view.access_rows(conn, work, self.owners)
        for mid, message in work.messages.items():
            self.owners[mid] = (message["tenant_id"], list(message["owner_ids"]))
        found = [
            *_entries(conn, after, stop, work.entries),
            *_rows(
                conn,
                audit_subjects,
                after,
                stop,
                {(t, s, p) for t, s, p in work.subjects},
                "what an access record names",
            ),
            *_rows(
                conn,
                audit_access,
                after,
                stop,
                {(r["tenant_id"], r["owner_id"], r["position"], r["message_id"]) for r in access},
                "the accounting of access",
            ),
        ]
        return min(found) if found else None


def _in_range(table: Table, after: int, stop: int) -> Any:
    return (table.c.position > after) & (table.c.position <= stop)


def _entries(
    conn: Connection, after: int, stop: int, expected: Iterable[dict[str, Any]]
) -> list[Mismatch]:
    made = {int(e["position"]): normal(e) for e in expected}
    query = select(audit_events).where(_in_range(audit_events, after, stop))
    stored = {int(r.position): normal(dict(r._mapping)) for r in conn.execute(query)}
    found: list[Mismatch] = []
    for position in sorted(made.keys() | stored.keys()):
        if position not in stored:
            found.append((position, "the audit entry of an event is missing"))
        elif position not in made:
            found.append((position, "an audit entry has no event in the log"))
        elif made[position] != stored[position]:
            found.append((position, "an audit entry differs from its event"))
        if found:
            break
    return found


def _rows(
    conn: Connection,
    table: Table,
    after: int,
    stop: int,
    expected: set[tuple[Any, ...]],
    what: str,
) -> list[Mismatch]:
    columns = [c for c in table.primary_key.columns]
    query = select(*columns).where(_in_range(table, after, stop))
    stored = {
        tuple(int(v) if c.name == "position" else v for c, v in zip(columns, row, strict=True))
        for row in conn.execute(query)
    }
    at = [c.name for c in columns].index("position")
    differing = stored ^ expected
    if not differing:
        return []
    return [(min(int(row[at]) for row in differing), f"{what} ({table.name}) differs from the log")]


def last_entry(conn: Connection) -> int:
    """The position of the last audit entry (0 without any)."""
    return int(conn.execute(select(func.max(audit_events.c.position))).scalar() or 0)
