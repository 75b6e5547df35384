"""The write side's own tables, outside the event log: what replay cannot rebuild.

SQLAlchemy Core metadata; the Alembic migrations mirror it (``migrations/schema.py``
gathers it with the read models' tables and the followers' positions).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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

from infrastructure.storage.columns import ID, USER, JSONVariant

metadata = MetaData()

# ---- keys (infrastructure/vault.py, infrastructure/blindindex.py) ---------------------
# Wrapped data keys, and what is derived from a message's content (its idempotency
# digest, its blind-index tokens); deleted by shredding.
key_vault = Table(
    "key_vault",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    # application.ports.HOLDER_TYPES: the holder of a row of one type is never taken for
    # one of another (a user id that reads "service:..." is not the service).
    Column("holder_type", String(16), primary_key=True),
    Column("holder", String(USER + 40), primary_key=True),
    Column("key_id", String(128), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "holder_type IN ('user', 'service', 'digest', 'search')", name="key_vault_holder_type"
    ),
)

# Each tenant's blind-index key, wrapped by the service keyring.
search_index_keys = Table(
    "search_index_keys",
    metadata,
    Column("tenant_id", String(USER), primary_key=True),
    Column("key_id", String(128), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# ---- jobs (infrastructure/delayed.py, infrastructure/jobruns.py) ------------------------
# Retries waiting out their backoff, follow-ups and scheduled sends' first jobs.
delayed_jobs = Table(
    "delayed_jobs",
    metadata,
    Column("job_id", String(200), primary_key=True),
    Column("queue", String(32), nullable=False),
    Column("body", JSONVariant, nullable=False),
    Column("due_at", Float, nullable=False),
    Index("delayed_jobs_due_idx", "due_at"),
)

# One row per attempt of a job (active, then its outcome).
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

# ---- audit (infrastructure/chain.py) -----------------------------------------------------
# Signed checkpoints of the audit hash chain.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
)

# ---- notifications (infrastructure/contacts.py) ------------------------------------------
# Personal data, kept out of the event log so that it can be corrected and erased.
notification_preferences = Table(
    "notification_preferences",
    metadata,
    Column("tenant_id", String(USER), primary_key=True),
    Column("user_id", String(USER), primary_key=True),
    Column("channels", JSONVariant, nullable=False),
    Column("email", String(320)),
    Column("phone", String(32)),
    Column("push_token", Text),
    Column("when_online", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# What a notification job already sent, so that a retry does not send it again.
notification_sends = Table(
    "notification_sends",
    metadata,
    Column("message_id", String(ID), primary_key=True),
    Column("user_id", String(USER), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("outcome", String(32), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)
