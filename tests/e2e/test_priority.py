"""Priority lanes over real processes: under a backlog of 500 normal messages, 10 high
ones sent after them are delivered before most of them (PostgreSQL with Redis, and with
RabbitMQ as the broker)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_DSN
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, wait_for

pytestmark = pytest.mark.e2e

NORMAL, HIGH = 500, 10
ADMIN = auth("ops", roles=["admin"])


@pytest.fixture(params=["redis", "rabbitmq"])
def runtime(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str, redis_url: str
) -> Iterator[Runtime]:
    env = services_env(pg_schema, redis_url)
    if request.param == "rabbitmq":
        env["BROKER_URL"] = request.getfixturevalue("amqp_url")
    started = Runtime("services", env, tmp_path).start()
    yield started
    started.stop()


def sql(schema: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def send(runtime: Runtime, count: int, priority: str | None) -> list[str]:
    def one(i: int) -> str:
        body: dict[str, Any] = {"recipientId": f"r{i % 50}", "content": f"note {i}"}
        if priority is not None:
            body["priority"] = priority
        answer = runtime.http.post("/api/messages/direct", json=body, headers=auth(f"s{i % 20}"))
        assert answer.status_code == 202, answer.text
        return str(answer.json()["message"]["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def waiting(runtime: Runtime, queue: str) -> int:
    metrics = runtime.http.get("/api/messages/queue/metrics", headers=ADMIN).json()
    return int(metrics["queues"][queue]["waiting"])


def test_high_priority_messages_overtake_a_backlog_of_normal_ones(
    runtime: Runtime, pg_schema: str
) -> None:
    runtime.processes["worker"].stop()  # let the backlog pile up
    normal = send(runtime, NORMAL, None)
    high = send(runtime, HIGH, "high")

    def published() -> bool:
        [(relay, newest)] = sql(
            pg_schema,
            "SELECT (SELECT position FROM followers WHERE name = 'relay'), "
            "(SELECT max(notification_id) FROM messaging_events)",
        )
        return relay is not None and relay >= newest

    wait_for(published, 60, "the relay to publish every job")
    assert waiting(runtime, "MESSAGE_DELIVERY") > 0

    runtime.start_role("worker")

    def delivered() -> dict[str, Any] | None:
        rows = sql(
            pg_schema,
            "SELECT message_id, delivered_at FROM message_recipients "
            "WHERE delivered_at IS NOT NULL",
        )
        return dict(rows) if len(rows) == NORMAL + HIGH else None

    times = wait_for(delivered, 180, "every message to be delivered")
    normal_times = sorted(times[mid] for mid in normal)
    median = normal_times[NORMAL // 2]
    for mid in high:
        later = sum(1 for t in normal_times if t > times[mid])
        assert later > NORMAL // 2, (
            f"a high message was delivered at {times[mid]}, before only {later} of "
            f"{NORMAL} normal ones (median {median})"
        )
    # Nothing else changes: one Delivered per message, every message done.
    [(twice,)] = sql(
        pg_schema,
        "SELECT count(*) FROM (SELECT originator_id FROM messaging_events WHERE topic = %s "
        "GROUP BY originator_id HAVING count(*) > 1) AS repeated",
        "courier.message:Delivered",
    )
    assert twice == 0
    runtime.wait_done("s0", high[0], timeout=60)
