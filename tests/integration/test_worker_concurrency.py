"""A queue's concurrency bounds the jobs it runs at once in one worker process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine

from application.jobs import DEFAULT_QUEUE_SETTINGS, MESSAGE_CLEANUP, Job
from application.processing import Outcome
from infrastructure import migrate
from infrastructure.broker import Broker
from infrastructure.delayed import DelayedJobs
from infrastructure.faults import FaultInjector
from infrastructure.jobruns import COMPLETED, JobRuns
from infrastructure.jobstats import JobStats
from infrastructure.worker import JobRunner, QueueConsumer
from tests.e2e.harness import wait_for


class Gate:
    """A processor whose jobs wait until released, counting how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.release = threading.Event()

    def run(self, job: Job) -> Outcome:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return Outcome([])


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    migrate.upgrade(url)
    engine = create_engine(url, connect_args={"check_same_thread": False})
    yield engine
    engine.dispose()


def test_no_more_than_concurrency_jobs_run_at_once(engine: Engine) -> None:
    broker = Broker("memory://")
    settings = replace(DEFAULT_QUEUE_SETTINGS[MESSAGE_CLEANUP], concurrency=3)
    gate = Gate()
    runs = JobRuns(engine)
    processor: Any = gate
    runner = JobRunner(
        processor,
        DelayedJobs(engine),
        {MESSAGE_CLEANUP: settings},
        FaultInjector(""),
        JobStats(),
        runs,
    )
    consumer = QueueConsumer(settings, broker, runner)
    jobs = [Job(MESSAGE_CLEANUP, uuid4(), "sweep", "t1") for _ in range(8)]
    broker.publish(jobs)
    consumer.start()
    try:
        wait_for(lambda: gate.running == 3, 10, "three jobs running")
        assert broker.depth(MESSAGE_CLEANUP) == 5  # the others wait in the broker
        assert gate.most == 3

        # Jobs running for a while are recorded, and counted, as active.
        def active() -> bool:
            return runs.figures({MESSAGE_CLEANUP: settings})[MESSAGE_CLEANUP].active == 3

        wait_for(active, 10, "the three running jobs counted as active")
        gate.release.set()
        wait_for(
            lambda: all([r.outcome for r in runs.of_job(j.job_id)] == [COMPLETED] for j in jobs),
            20,
            "every job completed once",
        )
        assert gate.most == 3
        assert broker.depth(MESSAGE_CLEANUP) == 0
    finally:
        gate.release.set()
        consumer.stop()
        consumer.join(timeout=5)
        broker.close()
