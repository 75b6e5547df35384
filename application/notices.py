"""What a notification about a message may carry."""

from __future__ import annotations

from application.ports import Notice
from domain.message import Message

PREVIEW_CHARS = 140


def notice_for(message: Message, preview_content: bool = False) -> Notice:
    """A notice carries no content unless ``preview_content`` (``NOTIFY_PREVIEW``) allows a
    plain message's to be previewed: notifications go through third parties (push
    services, mail and SMS providers). An encrypted message's notice never carries any."""
    preview = None
    if preview_content and not message.encrypted and message.content is not None:
        text = " ".join(message.content.split())
        preview = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
    return Notice(
        tenant_id=message.tenant_id,
        message_id=message.id,
        conversation_id=message.conversation_id,
        sender_id=message.sender_id,
        encrypted=message.encrypted,
        preview=preview,
    )
