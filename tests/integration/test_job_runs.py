"""Job attempts recorded as started, then as ended, on SQLite and PostgreSQL."""

from __future__ import annotations

from uuid import uuid4

from sqlalchemy import Engine

from application.jobs import MESSAGE_DELIVERY, Job
from infrastructure.jobruns import ACTIVE, COMPLETED, FAILED, RETRIED, JobRuns


def test_a_units_runs_start_together_and_each_ends_as_it_did(both_engines: Engine) -> None:
    engine = both_engines
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
