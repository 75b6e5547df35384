"""Plain-dict shapes of aggregates and of the application's answers, as the API
returns them (docs/API.md §5; their schemas: responses.py)."""

from __future__ import annotations

from typing import Any

from application.keys import PublicKey, RegisteredKey
from application.outgoing import SendResult
from application.sealing import Envelope, b64
from application.shredding import ShredReport
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


def send_answer(result: SendResult) -> dict[str, Any]:
    """``responses.SendAnswer`` built as a plain dict: a send is the hot path."""
    jobs = [{"queue": j.queue, "jobId": j.job_id, "state": "scheduled"} for j in result.jobs]
    return {"message": message_dict(result.message), "queue": {"jobs": jobs}}


def envelope_dict(envelope: Envelope) -> dict[str, Any]:
    return {
        "messageId": str(envelope.message_id),
        "algorithm": "AES-256-GCM",
        "ciphertext": envelope.ciphertext,
        "iv": envelope.iv,
        "authTag": envelope.auth_tag,
        "aad": envelope.aad,
        "wrappedKey": b64(envelope.wrapped_key),
        "keyAlgorithm": "RSA-OAEP-256",
        "recipientKeyId": envelope.recipient_key_id,
        "encryptionVersion": envelope.encryption_version,
    }


def shredded_dict(report: ShredReport) -> dict[str, Any]:
    return {
        "messageId": str(report.message_id),
        "shredded": True,
        "reason": report.reason,
        "keysDestroyed": report.keys_destroyed,
    }


def registered_key_dict(key: RegisteredKey) -> dict[str, str]:
    return {"keyId": key.key_id, "fingerprint": key.fingerprint, "createdAt": key.created_at}


def public_key_dict(key: PublicKey) -> dict[str, str]:
    return {
        "userId": key.user_id,
        "keyId": key.key_id,
        "publicKeyPem": key.public_key_pem,
        "fingerprint": key.fingerprint,
    }
