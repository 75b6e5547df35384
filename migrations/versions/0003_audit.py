"""Audit: the audit projection's index, legal holds, the hash chain and its checkpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2024-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = 36
USER = 128

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("audit_events_tenant_idx", "audit_events", ["tenant_id", "position"]),
    ("audit_events_aggregate_idx", "audit_events", ["tenant_id", "aggregate_id", "position"]),
    ("audit_events_actor_idx", "audit_events", ["tenant_id", "actor_id", "position"]),
    ("audit_events_type_idx", "audit_events", ["tenant_id", "type", "position"]),
    ("audit_events_time_idx", "audit_events", ["tenant_id", "occurred_at"]),
    (
        "audit_messages_retention_idx",
        "audit_messages",
        ["encrypted", "shredded_at", "created_at"],
    ),
    ("audit_messages_conversation_idx", "audit_messages", ["conversation_id"]),
)

TABLES = (
    "audit_events",
    "audit_subjects",
    "audit_messages",
    "audit_access",
    "legal_holds",
    "audit_chain",
    "audit_checkpoints",
)


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("aggregate_id", sa.String(ID), nullable=False),
        sa.Column("aggregate_type", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(USER), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", JSON, nullable=False),
    )
    op.create_table(
        "audit_subjects",
        sa.Column("tenant_id", sa.String(USER), primary_key=True),
        sa.Column("subject_id", sa.String(ID), primary_key=True),
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
    )
    op.create_table(
        "audit_messages",
        sa.Column("message_id", sa.String(ID), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("conversation_id", sa.String(ID), nullable=False),
        sa.Column("owner_ids", JSON, nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True)),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "audit_access",
        sa.Column("tenant_id", sa.String(USER), primary_key=True),
        sa.Column("owner_id", sa.String(USER), primary_key=True),
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("message_id", sa.String(ID), primary_key=True),
    )
    op.create_table(
        "legal_holds",
        sa.Column("conversation_id", sa.String(ID), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("placed_by", sa.String(USER), nullable=False),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "audit_chain",
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("position", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
    )
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(TABLES):
        op.drop_table(table)
