"""Queue metrics as a projection of the event log (projections/queue_metrics.py).

Revision ID: 0006
Revises: 0005
Create Date: 2024-12-05

The tables start empty: the `queue_metrics` projection fills them from the start of
the log (or `courier replay queue_metrics` rebuilds them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_metric_jobs",
        sa.Column("job_id", sa.String(200), primary_key=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("scheduled_at", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float()),
        sa.Column("latency_ms", sa.Float()),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "queue_metric_jobs_completed_idx", "queue_metric_jobs", ["queue", "completed_at"]
    )
    op.create_table(
        "queue_metric_totals",
        sa.Column("queue", sa.String(32), primary_key=True),
        sa.Column("completed", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("retries_requested", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("queue_metric_totals")
    op.drop_index("queue_metric_jobs_completed_idx", table_name="queue_metric_jobs")
    op.drop_table("queue_metric_jobs")
