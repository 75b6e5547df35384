"""Notification channels and the indexer behind the application's ports."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

log = logging.getLogger("courier.notify")


class LogNotifier:
    """Records a notification per offline recipient in the service log — never content."""

    def notify(
        self, tenant_id: str, message_id: UUID, user_ids: list[str], encrypted: bool
    ) -> dict[str, dict[str, str]]:
        log.info("notified %d offline recipient(s) of message %s", len(user_ids), message_id)
        return {user: {"channel": "log", "outcome": "sent"} for user in user_ids}


class FlagIndexer:
    """Search reads the `messages` view directly; indexing only marks a message searchable."""

    def index(self, message: Any) -> None:
        return None
