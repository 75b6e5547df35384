"""Messages and people for the unit tests, made the same way everywhere."""

from __future__ import annotations

from uuid import uuid4

from domain.conversation import DIRECT, GROUP
from domain.message import Message

TENANT = "acme"
META = {"actor_id": "alice", "tenant_id": TENANT, "correlation_id": "corr-1"}


def people(n: int) -> list[str]:
    return [f"u{i:03d}" for i in range(n)]


def new_message(
    recipients: list[str] | None = None,
    *,
    encrypted: bool = False,
    notify: bool = True,
    index: bool = True,
    meta: dict[str, str] = META,
    send_at: str | None = None,
) -> Message:
    """A message from alice (to bob unless told), accepted and nothing more."""
    recipients = ["bob"] if recipients is None else recipients
    return Message(
        id=uuid4(),
        tenant_id=TENANT,
        conversation_id=uuid4(),
        sender_id="alice",
        recipient_ids=recipients,
        kind=DIRECT if len(recipients) == 1 else GROUP,
        encrypted=encrypted,
        notify=notify,
        index=index,
        content=None if encrypted else "hello",
        sealed=None,
        end_to_end=False,
        content_digest="d" * 64,
        client_message_id=None,
        meta=meta,
        send_at=send_at,
    )
