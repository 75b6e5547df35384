"""Every read-side table, as SQLAlchemy Core metadata (Alembic migrations mirror it)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JSONVariant = JSON().with_variant(JSONB(), "postgresql")
ID = 36
USER = 128

followers = Table(
    "followers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("type", String(16), nullable=False),
    Column("title", Text),
    Column("participant_ids", JSONVariant, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

conversation_participants = Table(
    "conversation_participants",
    metadata,
    Column("conversation_id", String(ID), primary_key=True),
    Column("user_id", String(USER), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Index("conversation_participants_user_idx", "tenant_id", "user_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("sender_id", String(USER), nullable=False),
    Column("recipient_ids", JSONVariant, nullable=False),
    Column("type", String(16), nullable=False),
    Column("content", Text),
    Column("is_encrypted", Boolean, nullable=False, default=False),
    Column("encryption_metadata", JSONVariant),
    Column("encryption_version", String(8)),
    Column("status", String(16), nullable=False),
    Column("delivered_count", Integer, nullable=False, default=0),
    Column("recipient_count", Integer, nullable=False),
    Column("notified", Boolean, nullable=False, default=False),
    Column("indexed", Boolean, nullable=False, default=False),
    Column("notify", Boolean, nullable=False, default=True),
    Column("index_requested", Boolean, nullable=False, default=True),
    Column("failures", JSONVariant, nullable=False),
    Column("notified_batches", JSONVariant, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("messages_is_encrypted_idx", "is_encrypted"),
    Index("messages_conversation_encrypted_idx", "conversation_id", "is_encrypted"),
    Index("messages_conversation_created_idx", "conversation_id", "created_at", "id"),
    Index("messages_status_idx", "status", "created_at"),
)

message_recipients = Table(
    "message_recipients",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column("recipient_id", String(USER), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("batch", String(8), nullable=False),
    Column("online", Boolean),
    Column("delivered_at", DateTime(timezone=True)),
    Column("delivered_position", BigInteger),
    Column("read_at", DateTime(timezone=True)),
    Index("message_recipients_inbox_idx", "tenant_id", "recipient_id", "delivered_position"),
)

key_vault = Table(
    "key_vault",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column("holder", String(USER + 40), primary_key=True),
    Column("key_id", String(128), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

delayed_jobs = Table(
    "delayed_jobs",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("queue", String(32), nullable=False),
    Column("body", JSONVariant, nullable=False),
    Column("due_at", Float, nullable=False),
    Index("delayed_jobs_due_idx", "due_at"),
)

failed_jobs = Table(
    "failed_jobs",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("queue", String(32), nullable=False),
    Column("message_id", String(ID), nullable=False),
    Column("tenant_id", String(USER), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("failed_jobs_queue_idx", "queue", "failed_at"),
)

job_runs = Table(
    "job_runs",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("job_id", String(200), nullable=False),
    Column("queue", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("outcome", String(16), nullable=False),
    Column("error", String(120)),
    Index("job_runs_job_idx", "job_id"),
    Index("job_runs_queue_started_idx", "queue", "started_at"),
    Index("job_runs_queue_finished_idx", "queue", "finished_at"),
)

READ_TABLES = (conversations, conversation_participants, messages, message_recipients, failed_jobs)
