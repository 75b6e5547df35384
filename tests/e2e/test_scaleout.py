"""Scale-out: 2 API, 2 worker and 2 relay processes (plus projections) on PostgreSQL + Redis.

Messages go alternately through both API processes, as a load balancer would send them,
while one worker, the leading relay and one API process are killed with SIGKILL. A
request cut off by the dying API is sent again to the other one with the same
``clientMessageId``, as a client behind a load balancer would: it answers the original
message if the first attempt was stored. Nothing may be lost and nothing delivered
twice: every message reaches delivered, notified and indexed; the event log holds one
``Delivered`` per batch; the WebSocket recipient (on the surviving API) gets one
``message.new`` per message.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, connected, free_port, wait_for
from tests.e2e.private import PrivatePostgres
from tests.e2e.test_faults import SMALL_POOLS, Launch, private_schema

pytestmark = pytest.mark.e2e

MESSAGES = 300
GROUP_EVERY = 10  # every 10th message goes to a group of 60: two delivery batches
GROUP_SIZE = 60  # bob, the sender and 58 others


class Store:
    """The run's schema on the private PostgreSQL, read directly."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        options = f"-csearch_path={self.schema}"
        with psycopg.connect(self.dsn, autocommit=True, options=options) as conn:
            return conn.execute(query, params).fetchall()

    def settled(self) -> int:
        rows = self.rows(
            "SELECT count(*) FROM messages WHERE status = 'delivered' AND notified AND indexed"
        )
        return int(rows[0][0])


def delivered_batches(store: Store) -> dict[str, list[dict[str, Any]]]:
    rows = store.rows(
        "SELECT originator_id::text, state FROM messaging_events WHERE topic = %s",
        "courier.message:Delivered",
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for mid, state in rows:
        out.setdefault(mid, []).append(json.loads(bytes(state)))
    return out


class Apis:
    """Both API processes, as a load balancer sees them: alive or not."""

    def __init__(self, runtime: Runtime, second_port: int) -> None:
        self.urls = [runtime.base_url, f"http://127.0.0.1:{second_port}"]
        self.clients = [httpx.Client(base_url=url, timeout=60) for url in self.urls]
        self.dead: set[int] = set()
        self.retried = 0

    def post(self, i: int, path: str, body: dict[str, Any], user: str) -> httpx.Response:
        first = i % 2
        for n in (first, 1 - first):
            if n in self.dead:
                continue
            try:
                return self.clients[n].post(path, json=body, headers=auth(user))
            except httpx.HTTPError:
                self.retried += 1  # cut off by a dying process: the other one, same id
        raise AssertionError(f"no API process answered message {i}")

    def ready(self, n: int) -> bool:
        try:
            return self.clients[n].get("/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.mark.timeout(900)
def test_two_of_each_role_survive_kill_9_of_one_api_one_worker_and_the_leading_relay(
    private_pg: PrivatePostgres, redis_url: str, launch: Launch
) -> None:
    store = Store(private_pg.dsn, private_schema(private_pg))
    env = {
        **services_env(store.schema, redis_url),
        "DATABASE_URL": store.dsn,
        **SMALL_POOLS,
        "RECONCILE_AFTER_SECONDS": "10",
    }
    runtime = launch(env)
    second_port = free_port()
    runtime.start_role("serve", "--port", str(second_port), name="serve-2")
    runtime.start_role("worker", name="worker-2")
    leader = runtime.processes["relay"]
    wait_for(lambda: "relay is the leader" in leader.output(), 30, "the first relay to lead")
    standby = runtime.start_role("relay", name="relay-2")
    wait_for(lambda: "standing by" in standby.output(), 30, "the second relay to stand by")
    apis = Apis(runtime, second_port)
    wait_for(lambda: apis.ready(1), 60, "the second API to be ready")
    try:
        bob = connected(runtime.ws("bob"))  # on the first API, which stays up
        others = [f"nurse-{n:02d}" for n in range(GROUP_SIZE - 2)]
        group = runtime.http.post(
            "/api/conversations",
            json={"type": "group", "participantIds": ["bob", *others], "title": "ward 7"},
            headers=auth("lead"),
        )
        assert group.status_code == 201, group.text
        conversation_id = group.json()["id"]

        def kill_second_api() -> None:
            apis.dead.add(1)
            runtime.processes["serve-2"].kill()

        chaos: dict[int, Callable[[], None]] = {
            80: runtime.processes["worker"].kill,
            140: leader.kill,
            200: kill_second_api,
        }

        def one(i: int) -> str:
            body: dict[str, Any] = {"content": f"round {i}", "clientMessageId": f"c-{i}"}
            if i % GROUP_EVERY == 0:
                path, user = "/api/messages/group", "lead"
                body["conversationId"] = conversation_id
            else:
                path, user = "/api/messages/direct", f"s{i % 7}"
                body["recipientId"] = "bob"
            response = apis.post(i, path, body, user)
            assert response.status_code in (200, 202), response.text
            if i in chaos:
                chaos[i]()
            mid: str = response.json()["message"]["id"]
            return mid

        with ThreadPoolExecutor(6) as pool:
            ids = list(pool.map(one, range(MESSAGES)))
        assert len(set(ids)) == MESSAGES
        wait_for(lambda: "relay is the leader" in standby.output(), 60, "the standby to lead")
        wait_for(lambda: store.settled() == MESSAGES, 600, f"{MESSAGES} messages done")

        batches = delivered_batches(store)
        assert set(batches) == set(ids)
        for i, mid in enumerate(ids):
            names = [b["batch"] for b in batches[mid]]
            assert len(names) == len(set(names)), (mid, names)  # one Delivered per batch
            recipients = [r for b in batches[mid] for r in b["online"] + b["offline"]]
            expected = GROUP_SIZE - 1 if i % GROUP_EVERY == 0 else 1
            assert len(recipients) == len(set(recipients)) == expected, (mid, recipients)
            assert "bob" in recipients

        wait_for(lambda: set(bob.new_message_ids()) == set(ids), 60, "a frame per message")
        counts = Counter(bob.new_message_ids())
        assert max(counts.values()) == 1, [m for m, n in counts.items() if n > 1]
        assert not bob.closed.is_set()
        for name in ("serve", "worker-2", "relay-2", "projections"):
            process = runtime.processes[name].proc
            assert process is not None and process.poll() is None, name
        bob.close()
    finally:
        apis.close()
