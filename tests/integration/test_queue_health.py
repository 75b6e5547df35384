"""Queue figures and health rules over real job records (SQLite) and brokers.

memory:// stands in for a reachable broker, a closed port for an unreachable one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, update

from application.jobs import DEFAULT_QUEUE_SETTINGS, MESSAGE_CLEANUP, Job
from infrastructure import migrate
from infrastructure.broker import Broker
from infrastructure.delayed import DelayedJobs
from infrastructure.jobruns import COMPLETED, RETRIED, JobRuns
from infrastructure.runtime.queue_monitor import QueueMonitor
from infrastructure.settings import HealthRules
from infrastructure.tables import job_runs

RULES = HealthRules(stall_seconds=30.0, failure_rate=0.5, min_attempts=2)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def broker() -> Iterator[Broker]:
    broker = Broker("memory://")
    yield broker
    with broker.connection() as conn:  # memory:// is shared by the whole test process
        broker.queues[MESSAGE_CLEANUP].bind(conn.default_channel).purge()
    broker.close()


def monitor(engine: Engine, broker: Broker) -> QueueMonitor:
    queues = dict(DEFAULT_QUEUE_SETTINGS)
    runs = JobRuns(engine)
    return QueueMonitor(queues, broker, DelayedJobs(engine), runs, engine, RULES)


def job() -> Job:
    return Job(MESSAGE_CLEANUP, uuid4(), "sweep", "t1")


def backdate(engine: Engine, run_id: str, seconds: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(job_runs)
            .where(job_runs.c.run_id == run_id)
            .values(started_at=job_runs.c.started_at - seconds)
        )


def test_an_idle_queue_is_healthy(engine: Engine, broker: Broker) -> None:
    health = monitor(engine, broker).health(MESSAGE_CLEANUP)
    assert health["status"] == "healthy"
    assert {k: c["status"] for k, c in health["checks"].items()} == {
        "broker": "pass",
        "store": "pass",
        "progress": "pass",
        "failureRate": "pass",
    }


def test_jobs_waiting_with_none_started_lately_is_degraded(engine: Engine, broker: Broker) -> None:
    watcher = monitor(engine, broker)
    broker.publish([job()])
    assert watcher.metrics()["queues"][MESSAGE_CLEANUP]["waiting"] == 1
    stalled = watcher.health(MESSAGE_CLEANUP)  # nothing ever started
    assert stalled["status"] == "degraded"
    assert stalled["checks"]["progress"]["secondsSinceLastStart"] is None

    run_id = watcher.runs.start(job())
    assert watcher.health(MESSAGE_CLEANUP)["status"] == "healthy"  # one just started
    backdate(engine, run_id, 31.0)
    late = watcher.health(MESSAGE_CLEANUP)
    assert late["status"] == "degraded"
    assert late["checks"]["progress"]["secondsSinceLastStart"] >= 31.0


def test_too_many_failed_attempts_is_degraded(engine: Engine, broker: Broker) -> None:
    watcher = monitor(engine, broker)
    failing = job()
    first = watcher.runs.start(failing)
    watcher.runs.finish(first, RETRIED, RuntimeError("patient Jane Doe"))
    assert watcher.health(MESSAGE_CLEANUP)["status"] == "healthy"  # 1 attempt: too few
    second = watcher.runs.start(job())
    watcher.runs.finish(second, COMPLETED)
    assert watcher.health(MESSAGE_CLEANUP)["status"] == "healthy"  # 1 of 2 = the limit
    third = watcher.runs.start(job())
    watcher.runs.finish(third, RETRIED, TimeoutError())
    health = watcher.health(MESSAGE_CLEANUP)
    assert health["status"] == "degraded"
    check = health["checks"]["failureRate"]
    assert (check["failedAttempts"], check["attempts"], check["rate"]) == (2, 3, 0.6667)
    assert [r.error for r in watcher.runs.of_job(failing.job_id)] == ["RuntimeError"]


def test_an_unreachable_broker_is_unhealthy_and_waiting_unknown(engine: Engine) -> None:
    watcher = monitor(engine, Broker("redis://127.0.0.1:1/0"))
    health = watcher.health(MESSAGE_CLEANUP)
    assert health["status"] == "unhealthy"
    assert health["checks"]["broker"] == {"status": "fail", "waiting": None}
    figures = watcher.metrics()["queues"][MESSAGE_CLEANUP]
    assert figures["waiting"] is None and figures["completed"] == 0


def test_active_runs_count_until_their_timeout(engine: Engine, broker: Broker) -> None:
    queues = {MESSAGE_CLEANUP: replace(DEFAULT_QUEUE_SETTINGS[MESSAGE_CLEANUP], timeout_seconds=5)}
    runs = JobRuns(engine)
    same = job()
    for _ in range(2):  # the same job completed twice (a duplicate delivery)
        runs.finish(runs.start(same), COMPLETED)
    runs.start(job())  # running now
    crashed = runs.start(job())
    backdate(engine, crashed, 6.0)  # its worker died: past the timeout, no longer active
    figures = runs.figures(queues)[MESSAGE_CLEANUP]
    assert figures.active == 1
    assert (figures.finished_in_window, figures.failed_in_window) == (2, 0)
    assert [r.outcome for r in runs.of_job(same.job_id)] == [COMPLETED, COMPLETED]
    # Completed jobs are the event log's to count (the queue_metrics projection), not
    # the job runs': runs alone leave the figures at zero.
    shown = monitor(engine, broker).metrics()["queues"][MESSAGE_CLEANUP]
    assert (shown["completed"], shown["throughputPerMinute"], shown["p50Ms"]) == (0, 0, None)
    assert runs.prune(older_than_seconds=3600) == 0
    assert runs.prune(older_than_seconds=5.5) == 1  # the dead worker's row
