"""Job attempts recorded as started, then as ended, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, pool

from application.jobs import MESSAGE_DELIVERY, Job
from infrastructure.jobruns import ACTIVE, COMPLETED, FAILED, RETRIED, JobRuns
from migrations.schema import metadata
from tests.conftest import PG_DSN


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'runs.db'}", poolclass=pool.NullPool)
    else:
        schema = request.getfixturevalue("pg_schema")
        url = "postgresql+psycopg://" + PG_DSN.split("://", 1)[1]
        args = {"options": f"-csearch_path={schema}"}
        engine = create_engine(url, poolclass=pool.NullPool, connect_args=args)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_units_runs_start_together_and_each_ends_as_it_did(engine: Engine) -> None:
    runs = JobRuns(engine)
    jobs = [Job(MESSAGE_DELIVERY, uuid4(), "0", "t1") for _ in range(300)]
    run_ids = runs.start_many(jobs)
    assert len(set(run_ids)) == 300
    assert [r.outcome for r in runs.of_job(jobs[0].job_id)] == [ACTIVE]

    outcomes = [COMPLETED, RETRIED, FAILED]
    errors: list[BaseException | None] = [None, TimeoutError("slow"), KeyError("secret text")]
    ended = [(run_id, outcomes[i % 3], errors[i % 3]) for i, run_id in enumerate(run_ids)]
    with engine.begin() as conn:
        runs.finish_in(conn, ended[:299])  # the last one is still running

    for i, job in enumerate(jobs[:299]):
        [run] = runs.of_job(job.job_id)
        assert run.outcome == outcomes[i % 3]
        assert run.finished_at is not None and run.finished_at >= run.started_at
        # The error's class is kept, never its text.
        assert run.error == (None, "TimeoutError", "KeyError")[i % 3]
    [running] = runs.of_job(jobs[299].job_id)
    assert running.outcome == ACTIVE and running.finished_at is None
