"""Scheduled sends: the `messages` view shows when a scheduled message is due.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

A nullable column: existing rows were sent at once (NULL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("send_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("messages", "send_at")
