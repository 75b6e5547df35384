"""Retries, backoff, timeouts, failed jobs and operator retry, on every backend pair.

Each scenario runs in one process (every role) on SQLite with memory://, PostgreSQL
with Redis and PostgreSQL with RabbitMQ; FAULT_INJECT makes handlers fail or hang and
short QUEUE_* settings keep it quick. Delays are checked from the recorded job runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from uuid import UUID

import pytest

from application.errors import NotFound
from application.outgoing import Outgoing
from domain.events import Context
from domain.message import Message
from infrastructure.crypto import generate_master_key_spec
from infrastructure.jobruns import COMPLETED, FAILED, RETRIED, Run
from infrastructure.runtime import relay as relay_module
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.runtime.container import Container
from infrastructure.runtime.relay import Relay
from infrastructure.settings import load
from tests.conftest import PG_DSN
from tests.e2e.harness import wait_for

Factory = Callable[..., Container]
ALICE = Context(actor_id="alice", tenant_id="t1")
OPERATOR = Context(actor_id="ops-1", tenant_id="t1", actor_role="admin")


@pytest.fixture(params=["sqlite-memory", "postgres-redis", "postgres-rabbitmq"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    started: list[Container] = []
    base = {
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "COURIER_POLL_INTERVAL": "0.02",
    }
    if request.param == "sqlite-memory":
        base["COURIER_DATA_DIR"] = str(tmp_path)
    else:
        broker = "redis_url" if "redis" in request.param else "amqp_url"
        base.update(
            DATABASE_URL=PG_DSN,
            POSTGRES_SCHEMA=request.getfixturevalue("pg_schema"),
            POSTGRES_POOL_SIZE="2",
            BROKER_URL=request.getfixturevalue(broker),
        )

    def factory(env: dict[str, str], *, relay: bool = True) -> Container:
        container = build(load({**base, **env}), ALL)
        if not relay:
            container.relay = None  # nothing publishes: as if the broker lost every job
        container.start()
        started.append(container)
        return container

    yield factory
    for container in started:
        container.stop()


def send(container: Container) -> UUID:
    return container.messaging.send_direct(ALICE, "bob", Outgoing(content="hi")).message.id


def runs_settled(container: Container, job_id: str, count: int) -> list[Run] | None:
    runs = container.runs.of_job(job_id)
    done = [r for r in runs if r.finished_at is not None]
    return runs if len(done) >= count and done[-1].outcome in (COMPLETED, FAILED) else None


def gaps(runs: list[Run]) -> list[float]:
    """Seconds from each attempt's end to the next one's start."""
    return [b.started_at - (a.finished_at or 0.0) for a, b in pairwise(runs)]


def event_types(container: Container, mid: UUID) -> list[str]:
    return [type(e).__name__ for e in container.messaging.events.get(mid)]


@pytest.mark.services
def test_failing_twice_then_succeeding_backs_off_as_configured(make: Factory) -> None:
    container = make(
        {
            "FAULT_INJECT": "MESSAGE_DELIVERY:2,MESSAGE_INDEXING:2",
            "QUEUE_MESSAGE_DELIVERY_BACKOFF_SECONDS": "1",
            "QUEUE_MESSAGE_INDEXING_BACKOFF": "fixed",
            "QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS": "1",
        }
    )
    mid = send(container)
    deliver = f"MESSAGE_DELIVERY:{mid}:b0"
    index = f"MESSAGE_INDEXING:{mid}:index"

    exponential = wait_for(lambda: runs_settled(container, deliver, 3), 30, "delivery runs")
    assert [r.outcome for r in exponential] == [RETRIED, RETRIED, COMPLETED]
    assert [r.attempt for r in exponential] == [1, 2, 3]
    assert [r.error for r in exponential] == ["InjectedFault", "InjectedFault", None]
    first, second = gaps(exponential)
    # exponential 1 s: at least 1 * 2^0, then at least 1 * 2^1 (the jitter's upper bound,
    # 20 %, is a unit test's: tests/unit/test_queues.py; a busy host only adds delay)
    assert first >= 1.0, first
    assert second >= 2.0, second

    fixed = wait_for(lambda: runs_settled(container, index, 3), 30, "indexing runs")
    assert [r.outcome for r in fixed] == [RETRIED, RETRIED, COMPLETED]
    for gap in gaps(fixed):
        assert gap >= 1.0, gap

    message = container.messaging.get_message("t1", mid)
    assert message.is_delivered and message.indexed and not message.failures
    assert "ProcessingFailed" not in event_types(container, mid)
    figures = wait_for(
        lambda: (
            (f := container.monitor.metrics()["queues"])["MESSAGE_DELIVERY"]["completed"] == 1 and f
        ),
        10,
        "the queue_metrics projection to count the delivery",
    )
    assert figures["MESSAGE_DELIVERY"]["failed"] == 0
    # From the event that scheduled it (Created) to Delivered: both backoffs included.
    assert figures["MESSAGE_DELIVERY"]["p50Ms"] >= 3000.0


@pytest.mark.services
def test_always_failing_job_is_failed_then_an_operator_retry_completes_it(make: Factory) -> None:
    container = make(
        {
            "FAULT_INJECT": "MESSAGE_INDEXING:always",
            "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "3",
            "QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS": "0.1",
            "QUEUE_HEALTH_MIN_ATTEMPTS": "3",
        }
    )
    mid = send(container)
    job_id = f"MESSAGE_INDEXING:{mid}:index"
    monitor = container.monitor

    def listed() -> list[dict[str, object]]:
        return monitor.failed("t1", "MESSAGE_INDEXING", 10, 0)[0]

    items = wait_for(listed, 30, "the job in the failed list")
    assert items == [
        {
            "jobId": job_id,
            "queue": "MESSAGE_INDEXING",
            "messageId": str(mid),
            "attempts": 3,
            "error": "InjectedFault: injected failure on attempt 3",
            "failedAt": items[0]["failedAt"],
        }
    ]
    assert monitor.failed("another-tenant", "MESSAGE_INDEXING", 10, 0) == ([], 0)
    runs = container.runs.of_job(job_id)
    assert [r.outcome for r in runs] == [RETRIED, RETRIED, FAILED]
    failed_events = [
        e for e in container.messaging.events.get(mid) if isinstance(e, Message.ProcessingFailed)
    ]
    assert [(e.queue, e.job_id, e.attempts) for e in failed_events] == [
        ("MESSAGE_INDEXING", job_id, 3)
    ]
    assert wait_for(
        lambda: monitor.metrics()["queues"]["MESSAGE_INDEXING"]["failed"] == 1, 10, "failed = 1"
    )
    health = monitor.health("MESSAGE_INDEXING")
    assert health["status"] == "degraded"
    assert health["checks"]["failureRate"]["status"] == "warn"

    # The cause goes away (here: the injected fault); an operator retries the job.
    for consumer in container.workers.consumers if container.workers else []:
        consumer.runner.faults.rules.clear()
    container.messaging.request_retry(OPERATOR, job_id)
    wait_for(lambda: container.messaging.get_message("t1", mid).indexed, 30, "indexed")

    retries = [
        e for e in container.messaging.events.get(mid) if isinstance(e, Message.RetryRequested)
    ]
    assert len(retries) == 1 and retries[0].job_id == job_id
    assert retries[0].meta["actor_id"] == "ops-1" and retries[0].meta["actor_role"] == "admin"
    wait_for(lambda: not listed(), 10, "the failed list to be empty")
    figures = wait_for(
        lambda: (f := monitor.metrics()["queues"]["MESSAGE_INDEXING"])["completed"] == 1 and f,
        10,
        "the retried job to count as completed",
    )
    assert figures["failed"] == 0
    assert container.runs.of_job(job_id)[-1].outcome == COMPLETED
    with pytest.raises(NotFound):
        container.messaging.request_retry(OPERATOR, job_id)  # no longer failed
    with pytest.raises(NotFound):
        container.messaging.request_retry(Context("ops-2", "another-tenant"), job_id)


@pytest.mark.services
def test_a_hung_handler_is_timed_out_and_counts_as_a_failed_attempt(make: Factory) -> None:
    container = make(
        {
            "FAULT_INJECT": "MESSAGE_INDEXING:hang",
            "QUEUE_MESSAGE_INDEXING_TIMEOUT_SECONDS": "0.5",
            "QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS": "0.1",
        }
    )
    mid = send(container)
    runs = wait_for(
        lambda: runs_settled(container, f"MESSAGE_INDEXING:{mid}:index", 2), 30, "two runs"
    )
    assert [(r.outcome, r.error) for r in runs] == [(RETRIED, "TimeoutError"), (COMPLETED, None)]
    hung = runs[0]
    # abandoned at the 0.5 s timeout, counted from receipt (a little before the row)
    assert hung.finished_at is not None and hung.finished_at - hung.started_at >= 0.4
    wait_for(lambda: container.messaging.get_message("t1", mid).indexed, 10, "indexed")


@pytest.mark.services
def test_the_reconciler_republishes_the_jobs_of_messages_standing_still(
    make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = make({}, relay=False)
    ids = [send(container) for _ in range(5)]
    wait_for(
        lambda: all(container.queries.message_status(str(m)) == "accepted" for m in ids),
        30,
        "the read model to show five accepted messages",
    )
    relay = Relay(
        container.messaging,
        container.event_log,
        container.engine,
        container.broker,
        container.delayed,
        reconcile_after=0.0,
    )
    monkeypatch.setattr(relay_module, "RECONCILE_BATCH", 2)  # walk them in pages

    def all_done() -> bool:
        relay.reconcile()
        return all(
            (m := container.messaging.get_message("t1", mid)).is_delivered and m.indexed
            for mid in ids
        )

    wait_for(all_done, 60, "every message to be delivered and indexed")
    for mid in ids:
        assert event_types(container, mid).count("Delivered") == 1
