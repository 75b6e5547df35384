"""JSON Schemas of the answers (docs/API.md §5), for the OpenAPI document.

Each endpoint names the schema of its success answer; errors share ``Error``. The
fuzzing test (tests/e2e/test_fuzz.py) checks every answer of a real server against
these, so they say what the server really sends, and no more than clients may rely on.
"""

from __future__ import annotations

from typing import Any

from application.jobs import QUEUES as QUEUE_NAMES

REF = "#/components/schemas/{model}"
Schema = dict[str, Any]

TEXT: Schema = {"type": "string"}
ID: Schema = {"type": "string", "format": "uuid"}
TIME: Schema = {"type": "string", "format": "date-time"}
COUNT: Schema = {"type": "integer", "minimum": 0}
FLAG: Schema = {"type": "boolean"}
CURSOR: Schema = {"type": ["string", "null"]}


def ref(name: str) -> Schema:
    return {"$ref": REF.format(model=name)}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def shape(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """An object with exactly these properties (``optional`` ones may be absent)."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


def listing(item: Schema, **more: Schema) -> Schema:
    return shape({"items": {"type": "array", "items": item}, "nextCursor": CURSOR, **more})


MESSAGE = shape(
    {
        "id": ID,
        "conversationId": ID,
        "senderId": TEXT,
        "recipientIds": {"type": "array", "items": TEXT},
        "type": {"enum": ["direct", "group"]},
        "content": {"type": ["string", "null"]},
        "isEncrypted": FLAG,
        "encryptionMetadata": nullable(
            shape(
                {
                    "algorithm": {"const": "AES-256-GCM"},
                    "iv": {"type": ["string", "null"]},
                    "authTag": {"type": ["string", "null"]},
                    "keyId": {"type": ["string", "null"]},
                }
            )
        ),
        "encryptionVersion": {"type": ["string", "null"]},
        "status": {
            "enum": [
                "scheduled",
                "accepted",
                "encrypting",
                "encrypted",
                "delivering",
                "delivered",
                "failed",
                "cancelled",
            ]
        },
        "deliveredCount": COUNT,
        "recipientCount": COUNT,
        "notified": FLAG,
        "indexed": FLAG,
        "sendAt": {"type": ["string", "null"], "format": "date-time"},
        "createdAt": TIME,
        "updatedAt": TIME,
    }
)
CONVERSATION: Schema = shape(
    {
        "id": ID,
        "type": {"enum": ["direct", "group"]},
        "participantIds": {"type": "array", "items": TEXT},
        "title": {"type": ["string", "null"]},
        "createdAt": TIME,
    }
)
JOB = shape(
    {
        "queue": {"enum": list(QUEUE_NAMES)},
        "jobId": TEXT,
        "state": {"const": "scheduled"},
    }
)
SEND_ANSWER = shape(
    {
        "message": ref("Message"),
        "queue": shape({"jobs": {"type": "array", "items": ref("ScheduledJob")}}),
    }
)
REGISTERED_KEY = shape({"keyId": TEXT, "fingerprint": TEXT, "createdAt": TIME})
PUBLIC_KEY = shape({"userId": TEXT, "keyId": TEXT, "publicKeyPem": TEXT, "fingerprint": TEXT})
ENVELOPE = shape(
    {
        "messageId": ID,
        "algorithm": {"const": "AES-256-GCM"},
        "ciphertext": TEXT,
        "iv": TEXT,
        "authTag": TEXT,
        "aad": {"type": ["string", "null"]},
        "wrappedKey": TEXT,
        "keyAlgorithm": {"const": "RSA-OAEP-256"},
        "recipientKeyId": TEXT,
        "encryptionVersion": TEXT,
    }
)
SHREDDED = shape(
    {
        "messageId": ID,
        "shredded": {"const": True},
        "reason": {"enum": ["erasure", "retention"]},
        "keysDestroyed": COUNT,
    }
)
MILLIS: Schema = {"type": ["number", "null"], "minimum": 0}
QUEUE_FIGURES = shape(
    {
        "waiting": {"type": ["integer", "null"], "minimum": 0},
        "active": COUNT,
        "delayed": COUNT,
        "completed": COUNT,
        "failed": COUNT,
        "retriesRequested": COUNT,
        "throughputPerMinute": {"type": "number", "minimum": 0},
        "p50Ms": MILLIS,
        "p95Ms": MILLIS,
    }
)
QUEUE_METRICS = shape(
    {
        "queues": shape(
            dict.fromkeys(QUEUE_NAMES, ref("QueueFigures")),
        )
    }
)
CHECK: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["pass", "warn", "fail", "skipped"]}},
}
QUEUE_HEALTH = shape(
    {
        "queue": {"enum": list(QUEUE_NAMES)},
        "status": {"enum": ["healthy", "degraded", "unhealthy"]},
        "checks": {"type": "object", "additionalProperties": CHECK},
    }
)
FAILED_JOB = shape(
    {
        "jobId": TEXT,
        "queue": {"enum": list(QUEUE_NAMES)},
        "messageId": {"type": ["string", "null"]},
        "attempts": COUNT,
        "error": {"type": ["string", "null"]},
        "failedAt": TIME,
    }
)
FAILED_JOBS = shape({"items": {"type": "array", "items": ref("FailedJob")}, "total": COUNT})
RETRY = shape({"jobId": TEXT, "state": {"const": "waiting"}})
AUDIT_ENTRY = shape(
    {
        "position": {"type": "integer", "minimum": 1},
        "aggregateId": TEXT,
        "aggregateType": TEXT,
        "version": {"type": "integer"},
        "type": TEXT,
        "actorId": {"type": ["string", "null"]},
        "actorRole": {"type": ["string", "null"]},
        "tenantId": TEXT,
        "occurredAt": TIME,
        "data": {"type": "object"},
    }
)
ACCESS_ENTRY = shape(
    {**AUDIT_ENTRY["properties"], "messageIds": {"type": "array", "items": TEXT}},
)
HOLD = shape({"conversationId": TEXT, "reason": TEXT, "placedBy": TEXT, "placedAt": TIME})
HELD_CONVERSATION = shape(
    {**CONVERSATION["properties"], "legalHold": {"type": ["string", "null"]}},
)
VERDICT = shape(
    {
        "ok": FLAG,
        "checked": COUNT,
        "firstBadPosition": {"type": ["integer", "null"]},
        "chainedThrough": {"type": ["integer", "null"]},
        "reason": {"type": ["string", "null"]},
        "logHead": {"type": ["integer", "null"]},
        "lag": {"type": ["integer", "null"]},
        "auditedThrough": COUNT,
        "checkpoint": {
            "type": ["object", "null"],
            "properties": {"position": COUNT, "signedAt": TEXT},
        },
        "incremental": FLAG,
    }
)
PREFERENCES = shape(
    {
        "channels": {"type": "array", "items": {"enum": ["push", "email", "sms"]}},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "pushToken": {"type": ["string", "null"]},
        "notifyWhenOnline": FLAG,
    }
)
STATUS = shape({"status": {"const": "ok"}})
READINESS = shape(
    {
        "status": {"enum": ["ready", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": FLAG},
    }
)

SCHEMAS: dict[str, Schema] = {
    "Message": MESSAGE,
    "Conversation": CONVERSATION,
    "ScheduledJob": JOB,
    "SendAnswer": SEND_ANSWER,
    "MessagePage": listing(ref("Message")),
    "SearchAnswer": shape({"items": {"type": "array", "items": ref("Message")}}),
    "Envelope": ENVELOPE,
    "Shredded": SHREDDED,
    "RegisteredKey": REGISTERED_KEY,
    "PublicKeyAnswer": PUBLIC_KEY,
    "QueueFigures": QUEUE_FIGURES,
    "QueueMetrics": QUEUE_METRICS,
    "QueueHealth": QUEUE_HEALTH,
    "FailedJob": FAILED_JOB,
    "FailedJobs": FAILED_JOBS,
    "RetryAnswer": RETRY,
    "AuditEntry": AUDIT_ENTRY,
    "AuditPage": listing(ref("AuditEntry")),
    "AuditTrail": listing(ref("AuditEntry"), messageId=ID),
    "AccessEntry": ACCESS_ENTRY,
    "AccessAccounting": listing(ref("AccessEntry"), userId=TEXT),
    "ChainVerdict": VERDICT,
    "LegalHolds": shape({"items": {"type": "array", "items": HOLD}}),
    "HeldConversation": HELD_CONVERSATION,
    "NotificationPreferencesAnswer": PREFERENCES,
    "Liveness": STATUS,
    "Readiness": READINESS,
    "WsTicket": shape({"ticket": TEXT, "expiresIn": {"type": "integer", "minimum": 1}}),
    "OpenApiDocument": {"type": "object", "required": ["openapi", "paths"]},
}
