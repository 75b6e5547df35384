"""Read side: views, projection positions, key vault and job records.

Revision ID: 0001
Revises:
Create Date: 2024-11-28

Mirrors ``projections/tables.py`` as it stood at this revision; written out in full
so later edits to that module do not rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = 36
USER = 128

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("conversation_participants_user_idx", "conversation_participants", ["tenant_id", "user_id"]),
    ("messages_is_encrypted_idx", "messages", ["is_encrypted"]),
    ("messages_conversation_encrypted_idx", "messages", ["conversation_id", "is_encrypted"]),
    ("messages_conversation_created_idx", "messages", ["conversation_id", "created_at", "id"]),
    ("messages_status_idx", "messages", ["status", "created_at"]),
    (
        "message_recipients_inbox_idx",
        "message_recipients",
        ["tenant_id", "recipient_id", "delivered_position"],
    ),
    ("delayed_jobs_due_idx", "delayed_jobs", ["due_at"]),
    ("failed_jobs_queue_idx", "failed_jobs", ["queue", "failed_at"]),
)

TABLES = (
    "followers",
    "conversations",
    "conversation_participants",
    "messages",
    "message_recipients",
    "key_vault",
    "delayed_jobs",
    "failed_jobs",
)


def upgrade() -> None:
    op.create_table(
        "followers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("title", sa.Text()),
        sa.Column("participant_ids", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "conversation_participants",
        sa.Column("conversation_id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(USER), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(ID), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("conversation_id", sa.String(ID), nullable=False),
        sa.Column("sender_id", sa.String(USER), nullable=False),
        sa.Column("recipient_ids", JSON, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("content", sa.Text()),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.Column("encryption_metadata", JSON),
        sa.Column("encryption_version", sa.String(8)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("delivered_count", sa.Integer(), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("notify", sa.Boolean(), nullable=False),
        sa.Column("index_requested", sa.Boolean(), nullable=False),
        sa.Column("failures", JSON, nullable=False),
        sa.Column("notified_batches", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "message_recipients",
        sa.Column("message_id", sa.String(ID), primary_key=True),
        sa.Column("recipient_id", sa.String(USER), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("batch", sa.String(8), nullable=False),
        sa.Column("online", sa.Boolean()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_position", sa.BigInteger()),
        sa.Column("read_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "key_vault",
        sa.Column("message_id", sa.String(ID), primary_key=True),
        sa.Column("holder", sa.String(USER + 40), primary_key=True),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "delayed_jobs",
        sa.Column("job_id", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("due_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "failed_jobs",
        sa.Column("job_id", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("message_id", sa.String(ID), nullable=False),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
