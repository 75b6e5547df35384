"""Delayed jobs kept in the database, so a restart loses none: retries waiting out their
backoff, and follow-up jobs a worker hands to the relay (due at once).

The relay is the only publisher: it takes due rows, publishes them and deletes exactly
the rows it published (same job id and due time), so a row rescheduled meanwhile stays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from application.jobs import Job
from infrastructure.tables import delayed_jobs


class DelayedJobs:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def schedule(self, job: Job, delay: float) -> None:
        self.schedule_many([job], delay)

    def schedule_many(self, jobs: Sequence[Job], delay: float = 0.0) -> None:
        if not jobs:
            return
        with self.engine.begin() as conn:
            self.schedule_in(conn, [(job, delay) for job in jobs])

    def schedule_in(self, conn: Connection, jobs: Sequence[tuple[Job, float]]) -> None:
        """Schedule each ``(job, delay)`` inside the caller's transaction."""
        if not jobs:
            return
        now = time.time()
        self.hold_in(conn, [(job, now + delay) for job, delay in jobs])

    def hold_in(self, conn: Connection, jobs: Sequence[tuple[Job, float]]) -> None:
        """Hold each ``(job, due_at)`` (Unix seconds) inside the caller's transaction: a
        retry, a follow-up, or a scheduled send's first jobs."""
        if not jobs:
            return
        insert: Any = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        rows = {
            job.job_id: {
                "job_id": job.job_id,
                "queue": job.queue,
                "body": job.to_wire(),
                "due_at": due_at,
            }
            for job, due_at in jobs
        }
        stmt = insert(delayed_jobs)
        stmt = stmt.on_conflict_do_update(
            index_elements=["job_id"],
            set_={
                "queue": stmt.excluded.queue,
                "body": stmt.excluded.body,
                "due_at": stmt.excluded.due_at,
            },
        )
        conn.execute(stmt, list(rows.values()))

    def due(self, limit: int = 500) -> list[tuple[Job, float]]:
        """Jobs whose time has come, with the due time they were read at."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(delayed_jobs.c.body, delayed_jobs.c.due_at)
                .where(delayed_jobs.c.due_at <= time.time())
                .order_by(delayed_jobs.c.due_at)
                .limit(limit)
            ).all()
        return [(Job.from_wire(dict(r.body)), float(r.due_at)) for r in rows]

    def remove(self, published: Sequence[tuple[Job, float]]) -> None:
        """Delete the rows that were published, unless rescheduled since."""
        if not published:
            return
        with self.engine.begin() as conn:
            conn.execute(
                delete(delayed_jobs).where(
                    or_(
                        *(
                            and_(delayed_jobs.c.job_id == job.job_id, delayed_jobs.c.due_at == due)
                            for job, due in published
                        )
                    )
                )
            )

    def drop_in(self, conn: Connection, job_ids: Sequence[str]) -> None:
        """Delete the held jobs of these ids (a cancelled scheduled send's)."""
        if job_ids:
            conn.execute(delete(delayed_jobs).where(delayed_jobs.c.job_id.in_(list(job_ids))))

    def waiting_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r.job_id for r in conn.execute(select(delayed_jobs.c.job_id)).all()}

    def count(self, queue: str | None = None) -> int:
        query = select(func.count()).select_from(delayed_jobs)
        if queue is not None:
            query = query.where(delayed_jobs.c.queue == queue)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(delayed_jobs.c.queue, func.count()).group_by(delayed_jobs.c.queue)
            ).all()
        return {str(queue): int(count) for queue, count in rows}
