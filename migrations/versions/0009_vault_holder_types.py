"""A holder type of its own for every key-vault row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Rows of ``key_vault`` were told apart by their holder alone: a user id for a key
wrapped for that user, ``service:<data key id>``, ``digest:...`` or ``search:...`` for the
service's own rows. User ids may hold a colon, so a user named ``service:<id>`` could
have read or overwritten the service's row. ``holder_type`` ('user', 'service',
'digest', 'search') now says which, and is part of the primary key. Existing rows get
the type their holder's prefix names; every other row is a user's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "key_vault"
PKEY = "key_vault_pkey"
CHECK = "key_vault_holder_type"
TYPES = "holder_type IN ('user', 'service', 'digest', 'search')"
TYPE_OF_HOLDER = (
    "CASE "
    "WHEN holder LIKE 'service:%' THEN 'service' "
    "WHEN holder LIKE 'digest:%' THEN 'digest' "
    "WHEN holder LIKE 'search:%' THEN 'search' "
    "ELSE 'user' END"
)
ID = 36
USER = 128


def _sqlite_copy(primary_key: list[str], with_type: bool) -> None:
    """SQLite changes a primary key only by copying the table: make the new one, copy the
    rows, drop the old one and give the new one its name."""
    columns = [
        sa.Column("message_id", sa.String(ID), nullable=False),
        *([sa.Column("holder_type", sa.String(16), nullable=False)] if with_type else []),
        sa.Column("holder", sa.String(USER + 40), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    ]
    checks = [sa.CheckConstraint(TYPES, name=CHECK)] if with_type else []
    op.create_table(
        "key_vault_new", *columns, sa.PrimaryKeyConstraint(*primary_key, name=PKEY), *checks
    )
    kind = f"{TYPE_OF_HOLDER}, " if with_type else ""
    op.execute(
        "INSERT INTO key_vault_new SELECT message_id, "
        + kind
        + "holder, key_id, wrapped_key, created_at FROM key_vault"
    )
    op.drop_table(TABLE)
    op.rename_table("key_vault_new", TABLE)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_copy(["message_id", "holder_type", "holder"], with_type=True)
        return
    op.add_column(
        TABLE, sa.Column("holder_type", sa.String(16), nullable=False, server_default="user")
    )
    op.execute(f"UPDATE key_vault SET holder_type = {TYPE_OF_HOLDER}")
    op.alter_column(TABLE, "holder_type", server_default=None)
    op.drop_constraint(PKEY, TABLE, type_="primary")
    op.create_primary_key(PKEY, TABLE, ["message_id", "holder_type", "holder"])
    op.create_check_constraint(CHECK, TABLE, TYPES)


def downgrade() -> None:
    # A user row whose holder is also the holder of a row of another type cannot stay
    # once the type no longer tells them apart: the service's own row is kept.
    op.execute(
        "DELETE FROM key_vault WHERE holder_type = 'user' AND EXISTS ("
        "SELECT 1 FROM key_vault other WHERE other.message_id = key_vault.message_id "
        "AND other.holder = key_vault.holder AND other.holder_type <> 'user')"
    )
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_copy(["message_id", "holder"], with_type=False)
        return
    op.drop_constraint(CHECK, TABLE, type_="check")
    op.drop_constraint(PKEY, TABLE, type_="primary")
    op.create_primary_key(PKEY, TABLE, ["message_id", "holder"])
    op.drop_column(TABLE, "holder_type")
