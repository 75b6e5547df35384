"""Delayed jobs (retries with backoff) kept in the database, so a restart loses none."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from application.jobs import Job
from projections.tables import delayed_jobs


class DelayedJobs:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def schedule(self, job: Job, delay: float) -> None:
        insert: Any = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        values = {
            "job_id": job.job_id,
            "queue": job.queue,
            "body": job.to_wire(),
            "due_at": time.time() + delay,
        }
        stmt = insert(delayed_jobs).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=["job_id"], set_=values)
        with self.engine.begin() as conn:
            conn.execute(stmt)

    def due(self, limit: int = 500) -> list[Job]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(delayed_jobs.c.body)
                .where(delayed_jobs.c.due_at <= time.time())
                .order_by(delayed_jobs.c.due_at)
                .limit(limit)
            ).all()
        return [Job.from_wire(dict(r.body)) for r in rows]

    def remove(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        with self.engine.begin() as conn:
            conn.execute(
                delete(delayed_jobs).where(delayed_jobs.c.job_id.in_([j.job_id for j in jobs]))
            )

    def waiting_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r.job_id for r in conn.execute(select(delayed_jobs.c.job_id)).all()}

    def count(self, queue: str | None = None) -> int:
        query = select(delayed_jobs.c.job_id)
        if queue is not None:
            query = query.where(delayed_jobs.c.queue == queue)
        with self.engine.connect() as conn:
            return len(conn.execute(query).all())
