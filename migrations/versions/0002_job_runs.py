"""Job runs: one row per attempt of a job, written by the workers (queue metrics).

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES: tuple[tuple[str, list[str]], ...] = (
    ("job_runs_job_idx", ["job_id"]),
    ("job_runs_queue_started_idx", ["queue", "started_at"]),
    ("job_runs_queue_finished_idx", ["queue", "finished_at"]),
)


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.String(120)),
    )
    for name, columns in INDEXES:
        op.create_index(name, "job_runs", columns)


def downgrade() -> None:
    for name, _columns in reversed(INDEXES):
        op.drop_index(name, table_name="job_runs")
    op.drop_table("job_runs")
