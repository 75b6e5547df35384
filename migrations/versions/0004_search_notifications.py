"""Search view (full text and blind index), tenants' index keys, notification tables.

Revision ID: 0004
Revises: 0003
Create Date: 2024-12-03

On PostgreSQL a plain message's words are a tsvector column with a GIN index. On
SQLite that column stays NULL and the words go to the FTS5 virtual table
``search_fts`` instead, which only this migration knows of: a virtual table has no
place in ``projections/tables.py``, and the drift test leaves it out on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TSVECTOR = sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")
ID = 36
USER = 128
FTS_TABLE = "search_fts"
FTS_TOKENIZER = "porter unicode61 remove_diacritics 2"

TABLES = (
    "search_documents",
    "search_tokens",
    "search_index_keys",
    "notification_preferences",
    "notification_sends",
)


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("message_id", sa.String(ID), primary_key=True),
        sa.Column("tenant_id", sa.String(USER), nullable=False),
        sa.Column("conversation_id", sa.String(ID), nullable=False),
        sa.Column("sender_id", sa.String(USER), nullable=False),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.Column("searchable", sa.Boolean(), nullable=False),
        sa.Column("document", TSVECTOR),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "search_documents_tenant_created_idx", "search_documents", ["tenant_id", "created_at"]
    )
    op.create_index(
        "search_documents_document_idx",
        "search_documents",
        ["document"],
        postgresql_using="gin",
    )
    op.create_table(
        "search_tokens",
        sa.Column("tenant_id", sa.String(USER), primary_key=True),
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("message_id", sa.String(ID), primary_key=True),
    )
    op.create_index("search_tokens_message_idx", "search_tokens", ["message_id"])
    op.create_table(
        "search_index_keys",
        sa.Column("tenant_id", sa.String(USER), primary_key=True),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "notification_preferences",
        sa.Column("tenant_id", sa.String(USER), primary_key=True),
        sa.Column("user_id", sa.String(USER), primary_key=True),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("email", sa.String(320)),
        sa.Column("phone", sa.String(32)),
        sa.Column("push_token", sa.Text()),
        sa.Column("when_online", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "notification_sends",
        sa.Column("message_id", sa.String(ID), primary_key=True),
        sa.Column("user_id", sa.String(USER), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5("
            f"message_id UNINDEXED, document, tokenize = '{FTS_TOKENIZER}')"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TABLE IF EXISTS {FTS_TABLE}")
    op.drop_index("search_tokens_message_idx", table_name="search_tokens")
    op.drop_index("search_documents_document_idx", table_name="search_documents")
    op.drop_index("search_documents_tenant_created_idx", table_name="search_documents")
    for table in reversed(TABLES):
        op.drop_table(table)
