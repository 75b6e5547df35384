"""Notification preferences and contact details, and what was already sent.

Contact details are personal data: they live in a table, not the event log, so that a
user can correct or erase them, and they never reach a log line or an event.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from application.ports import NotificationPreferences
from infrastructure.tables import notification_preferences, notification_sends


def _insert(engine: Engine) -> type[postgresql.Insert] | type[sqlite.Insert]:
    return postgresql.Insert if engine.dialect.name == "postgresql" else sqlite.Insert


class SqlContactBook:
    """Implements ``application.ports.ContactBook``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, tenant_id: str, user_id: str) -> NotificationPreferences | None:
        return self.many(tenant_id, [user_id]).get(user_id)

    def many(self, tenant_id: str, user_ids: list[str]) -> dict[str, NotificationPreferences]:
        if not user_ids:
            return {}
        t = notification_preferences
        query = select(t).where(t.c.tenant_id == tenant_id, t.c.user_id.in_(user_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            row.user_id: NotificationPreferences(
                channels=tuple(row.channels),
                email=row.email,
                phone=row.phone,
                push_token=row.push_token,
                when_online=bool(row.when_online),
            )
            for row in rows
        }

    def put(self, tenant_id: str, user_id: str, preferences: NotificationPreferences) -> None:
        values = {
            "channels": list(preferences.channels),
            "email": preferences.email,
            "phone": preferences.phone,
            "push_token": preferences.push_token,
            "when_online": preferences.when_online,
            "updated_at": datetime.now(UTC),
        }
        stmt = _insert(self.engine)(notification_preferences).values(
            tenant_id=tenant_id, user_id=user_id, **values
        )
        stmt = stmt.on_conflict_do_update(index_elements=["tenant_id", "user_id"], set_=values)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def delete(self, tenant_id: str, user_id: str) -> bool:
        t = notification_preferences
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(t).where(t.c.tenant_id == tenant_id, t.c.user_id == user_id)
            )
        return bool(result.rowcount)


class SqlSendLog:
    """Per message, recipient and channel: what an earlier attempt already settled."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def settled(self, message_id: str, user_ids: list[str]) -> dict[tuple[str, str], str]:
        t = notification_sends
        query = select(t.c.user_id, t.c.channel, t.c.outcome).where(
            t.c.message_id == message_id, t.c.user_id.in_(user_ids)
        )
        with self.engine.connect() as conn:
            return {(r.user_id, r.channel): r.outcome for r in conn.execute(query)}

    def settled_many(self, message_ids: list[str]) -> dict[str, dict[tuple[str, str], str]]:
        """``settled`` for every recipient of many messages: message → (user, channel)."""
        if not message_ids:
            return {}
        t = notification_sends
        query = select(t.c.message_id, t.c.user_id, t.c.channel, t.c.outcome).where(
            t.c.message_id.in_(message_ids)
        )
        found: dict[str, dict[tuple[str, str], str]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                found.setdefault(r.message_id, {})[(r.user_id, r.channel)] = r.outcome
        return found

    def record(self, message_id: str, user_id: str, channel: str, outcome: str) -> None:
        stmt = (
            _insert(self.engine)(notification_sends)
            .values(
                message_id=message_id,
                user_id=user_id,
                channel=channel,
                outcome=outcome,
                sent_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)
