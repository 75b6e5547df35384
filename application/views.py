"""Plain-dict shapes of aggregates, as the API returns them (docs/API.md §5)."""

from __future__ import annotations

from typing import Any

from domain.conversation import Conversation
from domain.message import Message
from domain.timestamps import iso


def encryption_metadata(message: Message) -> dict[str, Any] | None:
    if message.encryption is None:
        return None
    enc = message.encryption
    return {
        "algorithm": "AES-256-GCM",
        "iv": enc.get("iv"),
        "authTag": enc.get("authTag"),
        "keyId": enc.get("keyId"),
    }


def message_dict(message: Message) -> dict[str, Any]:
    return {
        "id": str(message.id),
        "conversationId": str(message.conversation_id),
        "senderId": message.sender_id,
        "recipientIds": list(message.recipient_ids),
        "type": message.kind,
        "content": None if message.encrypted else message.content,
        "isEncrypted": message.encrypted,
        "encryptionMetadata": encryption_metadata(message),
        "encryptionVersion": message.encryption_version,
        "status": message.status,
        "deliveredCount": message.delivered_count,
        "recipientCount": len(message.recipient_ids),
        "notified": message.is_notified,
        "indexed": message.indexed,
        "sendAt": message.send_at,
        "createdAt": iso(message.created_on),
        "updatedAt": iso(message.modified_on),
    }


def conversation_dict(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": str(conversation.id),
        "type": conversation.kind,
        "participantIds": list(conversation.participant_ids),
        "title": conversation.title,
        "createdAt": iso(conversation.created_on),
    }
