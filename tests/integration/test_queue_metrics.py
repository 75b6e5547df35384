"""The `queue_metrics` projection on both stores: what it counts from the log, and a
rebuild by replay (while the figures keep being read) that answers the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from application.jobs import (
    MESSAGE_CLEANUP,
    MESSAGE_DELIVERY,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    QUEUES,
)
from application.outgoing import Outgoing
from domain.events import Context
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import Settings
from interfaces.replay import replay_projection
from projections.queue_metrics_queries import LogFigures
from projections.tables import queue_metric_jobs, queue_metric_totals
from tests.conftest import backend_settings
from tests.e2e.harness import wait_for
from tests.recipient import public_pem

ALICE = Context("alice", "t1")
OPERATOR = Context("ops-1", "t1", actor_role="admin")
PLAIN = Outgoing(content="hello", index=False)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    found: Settings = backend_settings(
        request,
        tmp_path,
        {"FAULT_INJECT": "MESSAGE_INDEXING:always", "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "1"},
    )
    return found


@contextmanager
def running(settings: Settings) -> Iterator[Container]:
    container = build(settings, ALL)
    container.start()
    try:
        yield container
    finally:
        container.stop()


def counts(container: Container) -> dict[str, tuple[int, int, int]]:
    """(completed, failed, retries requested) per queue, as the projection has them."""
    figures = container.monitor.log.figures(QUEUES)
    return {q: (f.completed, f.failed, f.retries_requested) for q, f in figures.items()}


def view_rows(container: Container) -> tuple[list[Any], list[Any]]:
    with container.engine.connect() as conn:
        jobs = conn.execute(select(queue_metric_jobs).order_by(queue_metric_jobs.c.job_id)).all()
        totals = conn.execute(
            select(queue_metric_totals).order_by(queue_metric_totals.c.queue)
        ).all()
    return [tuple(r) for r in jobs], [tuple(r) for r in totals]


def expect(**changed: tuple[int, int, int]) -> dict[str, tuple[int, int, int]]:
    return {q: changed.get(q, (0, 0, 0)) for q in QUEUES}


def test_figures_come_from_the_log_and_a_replay_gives_them_again(settings: Settings) -> None:
    with running(settings) as container:
        app = container.messaging
        for user in ("alice", "bob"):
            app.register_key(Context(user, "t1"), public_pem(user))
        for n in range(3):
            app.send_direct(ALICE, "bob", Outgoing(content=f"direct {n}", index=False))
        group = app.start_conversation(ALICE, "group", ["bob", "carol"], "ward 3")
        app.send_group(ALICE, group.id, PLAIN)
        app.send_direct(ALICE, "bob", Outgoing(content="sealed", encrypted=True, index=False))
        indexed = app.send_direct(ALICE, "bob", Outgoing(content="find me")).message.id

        # Every job of the six messages ran; indexing failed its only attempt.
        failing = expect(
            MESSAGE_DELIVERY=(6, 0, 0),
            MESSAGE_NOTIFICATION=(6, 0, 0),
            MESSAGE_ENCRYPTION=(1, 0, 0),
            BATCH_MESSAGE_SENDING=(1, 0, 0),
            MESSAGE_INDEXING=(0, 1, 0),
        )
        wait_for(lambda: counts(container) == failing, 60, f"{failing}, not {counts(container)}")
        assert container.monitor.failed("t1", MESSAGE_INDEXING, 10, 0)[1] == 1
        shown = container.monitor.metrics()["queues"]
        assert shown[MESSAGE_INDEXING]["failed"] == 1
        assert shown[MESSAGE_DELIVERY]["completed"] == 6
        assert shown[MESSAGE_DELIVERY]["throughputPerMinute"] == 6
        assert shown[MESSAGE_DELIVERY]["p50Ms"] is not None
        assert shown[MESSAGE_CLEANUP]["completed"] == 0 and shown[MESSAGE_CLEANUP]["p50Ms"] is None

        # The cause goes away; an operator retries: the job completes.
        assert container.workers is not None
        for consumer in container.workers.consumers:
            consumer.runner.faults.rules.clear()
        app.request_retry(OPERATOR, f"{MESSAGE_INDEXING}:{indexed}:index")
        done = {**failing, MESSAGE_INDEXING: (1, 0, 1)}
        wait_for(lambda: counts(container) == done, 30, "the retried job to count as completed")
        shown = container.monitor.metrics()["queues"]
        assert shown[MESSAGE_INDEXING]["retriesRequested"] == 1
        assert shown[MESSAGE_INDEXING]["failed"] == 0
        assert shown[MESSAGE_DELIVERY]["retriesRequested"] == 0

        now = time.time()
        before = container.monitor.log.figures(QUEUES, now)
        rows_before = view_rows(container)
        assert all(isinstance(f, LogFigures) for f in before.values())
        assert len(rows_before[0]) == 6 + 6 + 1 + 1 + 1  # a row per job the log scheduled

        # Rebuilt while the figures keep being read: every read answers, and the
        # answers afterwards are those of before.
        errors: list[BaseException] = []
        reads = [0]
        stopping = threading.Event()

        def keep_reading() -> None:
            while not stopping.is_set():
                try:
                    container.monitor.metrics()
                    reads[0] += 1
                except BaseException as error:
                    errors.append(error)

        reader = threading.Thread(target=keep_reading, daemon=True)
        reader.start()
        try:
            wait_for(lambda: reads[0] > 3, 10, "reads before the rebuild")
            result = replay_projection(settings, "queue_metrics", batch=7)
            started = reads[0]
            wait_for(lambda: reads[0] > started + 3, 10, "reads after the rebuild")
        finally:
            stopping.set()
            reader.join(timeout=10)
        assert not errors, errors
        assert result.events > 20
        assert container.monitor.log.figures(QUEUES, now) == before
        assert view_rows(container) == rows_before

        # The live projection carries on from the rebuilt tables.
        app.send_direct(ALICE, "bob", Outgoing(content="after", index=False))
        after = {**done, MESSAGE_DELIVERY: (7, 0, 0), MESSAGE_NOTIFICATION: (7, 0, 0)}
        wait_for(lambda: counts(container) == after, 30, "the next message to count")

        # Pruning forgets the rows of completed jobs, never the totals.
        assert container.monitor.log.prune(time.time() - 3600) == 0  # none that old
        assert container.monitor.log.prune(time.time() + 1) >= 15
        assert view_rows(container)[0] == []  # every job of the run had completed
        assert counts(container) == after
