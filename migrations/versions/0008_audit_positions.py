"""Indexes on the position of the audit view's subject and access rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

``courier audit verify`` and ``GET /api/audit/verify`` compare these rows with what the
audit view makes of the chained log, a range of positions at a time
(infrastructure/chain.py); without these indexes each range would scan the table.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("audit_subjects_position_idx", "audit_subjects", ["position"])
    op.create_index("audit_access_position_idx", "audit_access", ["position"])


def downgrade() -> None:
    op.drop_index("audit_access_position_idx", table_name="audit_access")
    op.drop_index("audit_subjects_position_idx", table_name="audit_subjects")
