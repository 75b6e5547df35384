"""What a sender asks for, and what a send makes before and after it is saved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from application.jobs import Job
from application.ports import VaultEntry
from domain.message import Message


@dataclass(frozen=True)
class Outgoing:
    """What a sender asks for, before any rule is applied."""

    content: str | None = None
    sealed: dict[str, Any] | None = None
    encrypted: bool = False
    notify: bool = True
    index: bool = True
    client_message_id: str | None = None
    send_at: str | None = None  # a scheduled send: when it is due (RFC 3339, UTC)
    priority: str = ""  # "high" or "low"; empty: normal


@dataclass
class Pending:
    """A new message not saved yet: its data keys, and the direct conversation it starts."""

    message: Message
    vault: list[VaultEntry]
    conversation: tuple[UUID, list[Any]] | None = None


@dataclass(frozen=True)
class Participants:
    """Who takes part in a conversation, when its aggregate need not be loaded."""

    id: UUID
    participant_ids: list[str]


@dataclass(frozen=True)
class SendResult:
    message: Message
    jobs: list[Job]
    created: bool
