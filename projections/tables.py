"""The read models' tables: rebuildable from the event log (``courier replay``).

SQLAlchemy Core metadata; the Alembic migrations mirror it (``migrations/schema.py``
gathers it with the write side's tables and the followers' positions).
"""

from __future__ import annotations

from sqlalchemy import (
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
from sqlalchemy.dialects.postgresql import TSVECTOR

from infrastructure.storage.columns import ID, USER, JSONVariant

metadata = MetaData()

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
    Column("send_at", DateTime(timezone=True)),  # a scheduled send's due time
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

# ---- queue metrics (projections/queue_metrics.py) ------------------------------------
# One row per job the log scheduled: when its scheduling event and its completing event
# were recorded (Unix seconds, from the events' timestamps), and whether it is failed.
queue_metric_jobs = Table(
    "queue_metric_jobs",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("queue", String(32), nullable=False),
    Column("scheduled_at", Float, nullable=False),
    Column("completed_at", Float),
    Column("latency_ms", Float),
    Column("failed", Boolean, nullable=False),
    Column("position", BigInteger, nullable=False),
    Index("queue_metric_jobs_completed_idx", "queue", "completed_at"),
)

# Per queue: jobs completed, jobs failed now, retries requested.
queue_metric_totals = Table(
    "queue_metric_totals",
    metadata,
    Column("queue", String(32), primary_key=True),
    Column("completed", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("retries_requested", BigInteger, nullable=False),
)

# ---- audit (projections/audit.py, projections/chain.py) ---------------------------

audit_events = Table(
    "audit_events",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("tenant_id", String(USER), nullable=False),
    Column("aggregate_id", String(ID), nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("actor_id", String(USER), nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("data", JSONVariant, nullable=False),
    Index("audit_events_tenant_idx", "tenant_id", "position"),
    Index("audit_events_aggregate_idx", "tenant_id", "aggregate_id", "position"),
    Index("audit_events_actor_idx", "tenant_id", "actor_id", "position"),
    Index("audit_events_type_idx", "tenant_id", "type", "position"),
    Index("audit_events_time_idx", "tenant_id", "occurred_at"),
)

audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column("tenant_id", String(USER), primary_key=True),
    Column("subject_id", String(ID), primary_key=True),
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Index("audit_subjects_position_idx", "position"),
)

audit_messages = Table(
    "audit_messages",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("owner_ids", JSONVariant, nullable=False),
    Column("encrypted", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True)),
    Column("position", BigInteger, nullable=False),
    Index("audit_messages_retention_idx", "encrypted", "shredded_at", "created_at"),
    Index("audit_messages_conversation_idx", "conversation_id"),
)

audit_access = Table(
    "audit_access",
    metadata,
    Column("tenant_id", String(USER), primary_key=True),
    Column("owner_id", String(USER), primary_key=True),
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", String(ID), primary_key=True),
    Index("audit_access_position_idx", "position"),
)

legal_holds = Table(
    "legal_holds",
    metadata,
    Column("conversation_id", String(ID), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("reason", Text, nullable=False),
    Column("placed_by", String(USER), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

AUDIT_TABLES = (audit_events, audit_subjects, audit_messages, audit_access, legal_holds)

# ---- search (projections/search.py) -------------------------------------------------
# PostgreSQL keeps a plain message's words as a tsvector here (GIN-indexed); SQLite
# leaves the column NULL and keeps them in the FTS5 table ``search_fts``, which is made
# by migration 0004 alone because a virtual table has no place in this metadata.
TSVectorVariant = Text().with_variant(TSVECTOR(), "postgresql")

search_documents = Table(
    "search_documents",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column("tenant_id", String(USER), nullable=False),
    Column("conversation_id", String(ID), nullable=False),
    Column("sender_id", String(USER), nullable=False),
    Column("is_encrypted", Boolean, nullable=False),
    Column("searchable", Boolean, nullable=False),
    Column("document", TSVectorVariant),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("position", BigInteger, nullable=False),  # also the FTS5 rowid on SQLite
    Index("search_documents_tenant_created_idx", "tenant_id", "created_at"),
    Index("search_documents_document_idx", "document", postgresql_using="gin"),
)

# Blind index of encrypted messages: HMAC tokens of their words, never the words.
search_tokens = Table(
    "search_tokens",
    metadata,
    Column("tenant_id", String(USER), primary_key=True),
    Column("token", String(32), primary_key=True),
    Column("message_id", String(ID), primary_key=True),
    Index("search_tokens_message_idx", "message_id"),
)

SEARCH_TABLES = (search_documents, search_tokens)

READ_TABLES = (conversations, conversation_participants, messages, message_recipients, failed_jobs)
QUEUE_METRIC_TABLES = (queue_metric_jobs, queue_metric_totals)
