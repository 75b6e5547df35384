"""The answers (docs/API.md §5): one pydantic model each, for the OpenAPI document and,
where the HTTP layer builds an answer itself, for its JSON body (``answer``).

Each endpoint names the model of its success answer; errors share ``Error``. The
fuzzing test (tests/e2e/test_fuzz.py) checks every answer of a real server against
their schemas, so they say what the server really sends, and no more than clients may
rely on. Answers built elsewhere as plain dicts (a message, a conversation, a page of
the audit view) and those of the sends, built as dicts for speed, are checked against
their models by tests/unit/test_answers.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from application.jobs import QUEUES as QUEUE_NAMES

REF = "#/components/schemas/{model}"
QueueName = Literal[
    "MESSAGE_DELIVERY",
    "MESSAGE_NOTIFICATION",
    "MESSAGE_ENCRYPTION",
    "MESSAGE_INDEXING",
    "BATCH_MESSAGE_SENDING",
    "MESSAGE_CLEANUP",
]
if get_args(QueueName) != QUEUE_NAMES:  # the schema's enum is the service's list
    raise AssertionError(f"QueueName {get_args(QueueName)} != {QUEUE_NAMES}")

Id = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Count = Annotated[int, Field(ge=0)]
Figure = Annotated[float, Field(ge=0)]
Kind = Literal["direct", "group"]


class Answer(BaseModel):
    """An answer's shape: camelCase keys, every one always present, nothing else."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, frozen=True, validate_by_name=True
    )


class Open(BaseModel):
    """A shape that names some properties and allows others."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, frozen=True)


# ---- messages --------------------------------------------------------------------------


class EncryptionMetadata(Answer):
    algorithm: Literal["AES-256-GCM"]
    iv: str | None
    auth_tag: str | None
    key_id: str | None


class Message(Answer):
    id: Id
    conversation_id: Id
    sender_id: str
    recipient_ids: list[str]
    type: Kind
    content: str | None
    is_encrypted: bool
    encryption_metadata: EncryptionMetadata | None
    encryption_version: str | None
    status: Literal[
        "scheduled",
        "accepted",
        "encrypting",
        "encrypted",
        "delivering",
        "delivered",
        "failed",
        "cancelled",
    ]
    delivered_count: Count
    recipient_count: Count
    notified: bool
    indexed: bool
    send_at: Time | None
    created_at: Time
    updated_at: Time


class ScheduledJob(Answer):
    queue: QueueName
    job_id: str
    state: Literal["scheduled"]


class SentJobs(Answer):
    jobs: list[ScheduledJob]


class SendAnswer(Answer):
    message: Message
    queue: SentJobs


class MessagePage(Answer):
    items: list[Message]
    next_cursor: str | None


class SearchAnswer(Answer):
    items: list[Message]


class Envelope(Answer):
    message_id: Id
    algorithm: Literal["AES-256-GCM"]
    ciphertext: str
    iv: str
    auth_tag: str
    aad: str | None
    wrapped_key: str
    key_algorithm: Literal["RSA-OAEP-256"]
    recipient_key_id: str
    encryption_version: str


class Shredded(Answer):
    message_id: Id
    shredded: Literal[True]
    reason: Literal["erasure", "retention"]
    keys_destroyed: Count


# ---- conversations and keys -----------------------------------------------------------


class Conversation(Answer):
    id: Id
    type: Kind
    participant_ids: list[str]
    title: str | None
    created_at: Time


class RegisteredKey(Answer):
    key_id: str
    fingerprint: str
    created_at: Time


class PublicKeyAnswer(Answer):
    user_id: str
    key_id: str
    public_key_pem: str
    fingerprint: str


# ---- queues ------------------------------------------------------------------------------


class QueueFigures(Answer):
    waiting: Count | None
    active: Count
    delayed: Count
    completed: Count
    failed: Count
    retries_requested: Count
    throughput_per_minute: Figure
    p50_ms: Figure | None
    p95_ms: Figure | None


class FiguresByQueue(Answer):
    message_delivery: QueueFigures = Field(alias="MESSAGE_DELIVERY")
    message_notification: QueueFigures = Field(alias="MESSAGE_NOTIFICATION")
    message_encryption: QueueFigures = Field(alias="MESSAGE_ENCRYPTION")
    message_indexing: QueueFigures = Field(alias="MESSAGE_INDEXING")
    batch_message_sending: QueueFigures = Field(alias="BATCH_MESSAGE_SENDING")
    message_cleanup: QueueFigures = Field(alias="MESSAGE_CLEANUP")


class QueueMetrics(Answer):
    queues: FiguresByQueue


class Check(Open):
    status: Literal["pass", "warn", "fail", "skipped"]


class QueueHealth(Answer):
    queue: QueueName
    status: Literal["healthy", "degraded", "unhealthy"]
    checks: dict[str, Check]


class FailedJob(Answer):
    job_id: str
    queue: QueueName
    message_id: str | None
    attempts: Count
    error: str | None
    failed_at: Time


class FailedJobs(Answer):
    items: list[FailedJob]
    total: Count


class RetryAnswer(Answer):
    job_id: str
    state: Literal["waiting"]


# ---- audit -----------------------------------------------------------------------------


class AuditEntry(Answer):
    position: Annotated[int, Field(ge=1)]
    aggregate_id: str
    aggregate_type: str
    version: int
    type: str
    actor_id: str | None
    actor_role: str | None
    tenant_id: str
    occurred_at: Time
    data: dict[str, Any]


class AccessEntry(AuditEntry):
    message_ids: list[str]


class AuditPage(Answer):
    items: list[AuditEntry]
    next_cursor: str | None


class AuditTrail(AuditPage):
    message_id: Id


class AccessAccounting(Answer):
    items: list[AccessEntry]
    next_cursor: str | None
    user_id: str


class CheckedCheckpoint(Open):
    position: Count = 0
    signed_at: str = ""


class ChainVerdict(Answer):
    ok: bool
    checked: Count
    first_bad_position: int | None
    chained_through: int | None
    reason: str | None
    log_head: int | None
    lag: int | None
    audited_through: Count
    checkpoint: CheckedCheckpoint | None
    incremental: bool


class Hold(Answer):
    conversation_id: str
    reason: str
    placed_by: str
    placed_at: Time


class LegalHolds(Answer):
    items: list[Hold]


class HeldConversation(Conversation):
    legal_hold: str | None


# ---- users, operations, tickets, errors --------------------------------------------------


class NotificationPreferencesAnswer(Answer):
    channels: list[Literal["push", "email", "sms"]]
    email: str | None
    phone: str | None
    push_token: str | None
    notify_when_online: bool


class Liveness(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready", "unavailable"]
    checks: dict[str, bool]


class WsTicket(Answer):
    ticket: str
    expires_in: Annotated[int, Field(ge=1)]


class OpenApiDocument(Open):
    openapi: str
    paths: dict[str, Any]


class ErrorDetail(Open):
    field: str = ""
    issue: str = ""


class ErrorBody(Open):
    code: Annotated[str, Field(pattern="^[a-z][a-z0-9_]*$")]
    message: str
    details: list[ErrorDetail]


class Error(Open):
    error: ErrorBody


ANSWERS: tuple[type[BaseModel], ...] = (
    Message,
    Conversation,
    ScheduledJob,
    SendAnswer,
    MessagePage,
    SearchAnswer,
    Envelope,
    Shredded,
    RegisteredKey,
    PublicKeyAnswer,
    QueueFigures,
    QueueMetrics,
    QueueHealth,
    FailedJob,
    FailedJobs,
    RetryAnswer,
    AuditEntry,
    AuditPage,
    AuditTrail,
    AccessEntry,
    AccessAccounting,
    ChainVerdict,
    LegalHolds,
    HeldConversation,
    NotificationPreferencesAnswer,
    Liveness,
    Readiness,
    WsTicket,
    OpenApiDocument,
    Error,
)
