"""Queues over real processes: operator retry over HTTP, monitoring, and nothing lost.

Services runtime (PostgreSQL, Redis): a failed job retried by an admin, the monitoring
endpoints; 2,000 messages through two workers and two relays while a worker and the
leading relay are killed with SIGKILL; 500 messages while the broker loses every key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from application.jobs import QUEUES
from tests.conftest import PG_DSN
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, wait_for

pytestmark = pytest.mark.e2e

Start = Callable[..., Runtime]
ADMIN = ["admin"]
SMALL_POOLS = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}


@pytest.fixture
def start(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[Start]:
    runtimes: list[Runtime] = []

    def factory(**env: str) -> Runtime:
        runtime = Runtime(
            "services", {**services_env(pg_schema, redis_url), **SMALL_POOLS, **env}, tmp_path
        )
        runtimes.append(runtime)
        return runtime.start()

    yield factory
    for runtime in runtimes:
        runtime.stop()


def sql(schema: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def send_many(runtime: Runtime, count: int, on_sent: Callable[[int], None]) -> list[str]:
    """``count`` direct messages from 8 threads; ``on_sent(n)`` after each accepted one."""

    def one(i: int) -> str:
        response = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": f"r{i % 50}", "content": f"note {i}"},
            headers=auth(f"s{i % 20}"),
        )
        assert response.status_code == 202, response.text
        on_sent(i)
        mid: str = response.json()["message"]["id"]
        return mid

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def finished(schema: str) -> int:
    rows = sql(schema, "SELECT count(*) FROM messages WHERE status = 'delivered' AND indexed")
    return int(rows[0][0])


def deliveries(schema: str) -> dict[str, int]:
    rows = sql(
        schema,
        "SELECT originator_id::text, count(*) FROM messaging_events WHERE topic = %s "
        "GROUP BY originator_id",
        "courier.message:Delivered",
    )
    return {mid: int(n) for mid, n in rows}


def test_a_failed_job_is_listed_and_an_admin_retry_completes_it(
    start: Start, pg_schema: str
) -> None:
    runtime = start(
        FAULT_INJECT="MESSAGE_INDEXING:always",
        QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS="2",
        QUEUE_MESSAGE_INDEXING_BACKOFF_SECONDS="0.2",
        QUEUE_HEALTH_MIN_ATTEMPTS="2",
    )
    http = runtime.http
    sent = http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "potassium 6.1, please call"},
        headers=auth("alice"),
    )
    assert sent.status_code == 202, sent.text
    mid = sent.json()["message"]["id"]
    job_id = f"MESSAGE_INDEXING:{mid}:index"
    failed_url = "/api/messages/queue/MESSAGE_INDEXING/failed"

    def listed() -> list[dict[str, Any]]:
        response = http.get(failed_url, headers=auth("ops-1", roles=ADMIN))
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    items = wait_for(listed, 30, "the failed job in the list")
    assert [(i["jobId"], i["messageId"], i["attempts"]) for i in items] == [(job_id, mid, 2)]
    assert set(items[0]) == {"jobId", "queue", "messageId", "attempts", "error", "failedAt"}
    page = http.get(failed_url + "?limit=1&offset=1", headers=auth("ops-1", roles=ADMIN)).json()
    assert page == {"items": [], "total": 1}
    other_tenant = http.get(failed_url, headers=auth("ops-9", "t2", roles=ADMIN)).json()
    assert other_tenant == {"items": [], "total": 0}

    # Separation of duties, unknown names, unknown jobs.
    for roles in (["user"], ["auditor"]):
        assert (
            http.get("/api/messages/queue/metrics", headers=auth("x", roles=roles)).status_code
            == 403
        )
    admin = auth("ops-1", roles=ADMIN)
    assert http.get("/api/messages/queue/NOPE/health", headers=admin).status_code == 404
    assert http.get("/api/messages/queue/NOPE/failed", headers=admin).status_code == 404
    bogus = f"MESSAGE_INDEXING:{mid}:nothing"
    assert http.post(f"{failed_url}/{bogus}/retry", headers=admin).status_code == 404
    wrong_queue = f"/api/messages/queue/MESSAGE_DELIVERY/failed/{job_id}/retry"
    assert http.post(wrong_queue, headers=admin).status_code == 404
    other_admin = auth("ops-9", "t2", roles=ADMIN)
    assert http.post(f"{failed_url}/{job_id}/retry", headers=other_admin).status_code == 404

    metrics = http.get("/api/messages/queue/metrics", headers=admin).json()["queues"]
    assert set(metrics) == set(QUEUES)
    keys = {"waiting", "active", "delayed", "completed", "failed", "retriesRequested"}
    keys |= {"throughputPerMinute"}
    for figures in metrics.values():
        assert keys | {"p50Ms", "p95Ms"} == set(figures)
    assert metrics["MESSAGE_INDEXING"]["failed"] == 1
    health = http.get("/api/messages/queue/MESSAGE_INDEXING/health", headers=admin).json()
    assert health["queue"] == "MESSAGE_INDEXING"
    assert health["status"] == "degraded", health  # 2 of 2 attempts failed
    assert health["checks"]["broker"]["status"] == "pass"
    prometheus = http.get("/metrics")
    assert prometheus.status_code == 200
    assert 'courier_queue_failed{queue="MESSAGE_INDEXING"} 1.0' in prometheus.text
    for text in (json.dumps(items), json.dumps(metrics), json.dumps(health), prometheus.text):
        assert "potassium" not in text

    # The cause is fixed (the worker restarts without the fault); an admin retries.
    runtime.start_role("worker", env={"FAULT_INJECT": ""})
    retried = http.post(f"{failed_url}/{job_id}/retry", headers=admin)
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"jobId": job_id, "state": "waiting"}

    wait_for(lambda: runtime.message("alice", mid)["indexed"], 30, "the message to be indexed")
    wait_for(lambda: not listed(), 10, "the failed list to empty")
    after = wait_for(
        lambda: (
            (m := http.get("/api/messages/queue/metrics", headers=admin).json()["queues"])[
                "MESSAGE_INDEXING"
            ]["completed"]
            == 1
            and m
        ),
        10,
        "metrics to count the retried job as completed",
    )
    assert after["MESSAGE_INDEXING"]["failed"] == 0
    assert after["MESSAGE_INDEXING"]["retriesRequested"] == 1
    scraped = http.get("/metrics").text
    assert 'courier_queue_failed{queue="MESSAGE_INDEXING"} 0.0' in scraped
    assert 'courier_queue_retries_requested{queue="MESSAGE_INDEXING"} 1.0' in scraped

    # Who retried is in the event store, on the RetryRequested event itself.
    rows = sql(
        pg_schema,
        "SELECT state FROM messaging_events WHERE originator_id = %s AND topic = %s",
        mid,
        "courier.message:RetryRequested",
    )
    assert len(rows) == 1
    state = json.loads(bytes(rows[0][0]))
    assert state["job_id"] == job_id
    assert state["meta"]["actor_id"] == "ops-1" and state["meta"]["actor_role"] == "admin"


@pytest.mark.timeout(900)  # a loaded 2-core machine sends and projects 2,000 slowly
def test_2000_messages_survive_kill_9_of_a_worker_and_of_the_leading_relay(
    start: Start, pg_schema: str
) -> None:
    runtime = start(RECONCILE_AFTER_SECONDS="20")
    runtime.start_role("worker", name="worker-2")
    leader = runtime.processes["relay"]
    wait_for(lambda: "relay is the leader" in leader.output(), 30, "the first relay to lead")
    standby = runtime.start_role("relay", name="relay-2")
    wait_for(lambda: "standing by" in standby.output(), 30, "the second relay to stand by")

    def chaos(i: int) -> None:
        if i == 500:
            runtime.processes["worker"].kill()
        if i == 1000:
            leader.kill()

    ids = send_many(runtime, 2000, chaos)
    wait_for(lambda: "relay is the leader" in standby.output(), 30, "the standby to take over")
    wait_for(lambda: finished(pg_schema) == 2000, 600, "2,000 messages delivered and indexed")

    counts = deliveries(pg_schema)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [m for m, n in counts.items() if n > 1]
    sample = runtime.message("s0", ids[0])
    assert sample["status"] == "delivered" and sample["deliveredCount"] == 1


@pytest.mark.timeout(600)
def test_500_messages_survive_the_broker_losing_every_key(
    start: Start, pg_schema: str, redis_url: str
) -> None:
    runtime = start()
    broker = redis.Redis.from_url(redis_url)

    def flush(i: int) -> None:
        if i == 250:
            # FLUSHDB of the broker's own database: the same as FLUSHALL for Courier,
            # without wiping other suites that share this Redis server.
            broker.flushdb()

    ids = send_many(runtime, 500, flush)
    wait_for(lambda: finished(pg_schema) == 500, 400, "500 messages delivered and indexed")
    counts = deliveries(pg_schema)
    assert set(counts) == set(ids) and max(counts.values()) == 1
    broker.close()
