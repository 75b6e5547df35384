"""Dependency faults against private servers: PostgreSQL stopped under load, Redis restarted.

Each test starts a PostgreSQL cluster or a Redis of its own (tests/e2e/private.py) and a
services runtime on it, stops or kills that server while clients keep sending, brings it
back, and checks that every process recovered by itself (none is restarted) and that
nothing the service accepted was lost.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from application.jobs import QUEUES
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, WsClient, auth, connected, wait_for
from tests.e2e.private import PrivatePostgres, PrivateRabbit, PrivateRedis

pytestmark = pytest.mark.e2e

# Small pools (several processes share one server); the recipient's socket only listens,
# so it may stay silent for longer than the default idle timeout of 120 s.
SMALL_POOLS = {"POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4", "WS_IDLE_SECONDS": "900"}
Launch = Callable[[dict[str, str]], Runtime]


def private_schema(server: PrivatePostgres) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    server.create_schema(name)
    return name


def rows(dsn: str, schema: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, options=f"-csearch_path={schema}") as conn:
        return conn.execute(query, params).fetchall()


def settled(dsn: str, schema: str, ids: list[str]) -> int:
    """How many of ``ids`` are delivered, notified and indexed in the read model."""
    found = rows(
        dsn,
        schema,
        "SELECT count(*) FROM messages WHERE id = ANY(%s) AND status = 'delivered' "
        "AND notified AND indexed",
        ids,
    )
    return int(found[0][0])


def stored(dsn: str, schema: str, ids: list[str]) -> set[str]:
    found = rows(
        dsn,
        schema,
        "SELECT DISTINCT originator_id::text FROM messaging_events "
        "WHERE topic = 'courier.message:Created' AND originator_id = ANY(%s::uuid[])",
        ids,
    )
    return {r[0] for r in found}


def all_created(dsn: str, schema: str) -> set[str]:
    found = rows(
        dsn,
        schema,
        "SELECT originator_id::text FROM messaging_events WHERE topic = 'courier.message:Created'",
    )
    return {r[0] for r in found}


def deliveries(dsn: str, schema: str) -> Counter[str]:
    found = rows(
        dsn,
        schema,
        "SELECT originator_id::text, count(*) FROM messaging_events "
        "WHERE topic = 'courier.message:Delivered' GROUP BY originator_id",
    )
    return Counter({mid: int(n) for mid, n in found})


@dataclass
class Load:
    """Clients sending direct messages back to back until told to stop."""

    base_url: str
    recipient: str = "bob"
    threads: int = 4
    interval: float = 0.0  # each client's pause between two sends (0: back to back)
    accepted: list[str] = field(default_factory=list)
    refusals: list[httpx.Response] = field(default_factory=list)
    refusal_seconds: list[float] = field(default_factory=list)
    slowest: float = 0.0  # the longest any request waited for its answer
    replayed: int = 0  # retries answered 200: the refused try had been stored
    others: list[str] = field(default_factory=list)  # anything but 202 or a 503
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._send, args=(n,), daemon=True)
            thread.start()
            self.workers.append(thread)
        return self

    def _send(self, n: int) -> None:
        """Send after send; a refused one again, with its ``clientMessageId``, until taken.

        A 503 does not say the command was not stored (the connection may break after the
        commit): a client that retries with the same id gets the original, never a second
        message, so every command ends up stored exactly once.
        """
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            i = 0
            while not self.stopping.is_set():
                i += 1
                body = {"recipientId": self.recipient, "content": f"obs {n}-{i}"}
                body["clientMessageId"] = f"{n}-{i}"
                while not self._taken(http, n, body):
                    self.stopping.wait(0.1)  # the client's pause before it tries again
                self.stopping.wait(self.interval)

    def _taken(self, http: httpx.Client, n: int, body: dict[str, str]) -> bool:
        try:
            response = http.post("/api/messages/direct", json=body, headers=auth(f"nurse-{n}"))
        except httpx.HTTPError as error:
            with self.lock:
                self.others.append(type(error).__name__)
            return True
        with self.lock:
            self.slowest = max(self.slowest, response.elapsed.total_seconds())
            if response.status_code in (200, 202):
                self.accepted.append(response.json()["message"]["id"])
                self.replayed += response.status_code == 200
                return True
            if response.status_code == 503:
                self.refusals.append(response)
                self.refusal_seconds.append(response.elapsed.total_seconds())
                return False
            self.others.append(f"{response.status_code} {response.text[:200]}")
            return True

    def count(self) -> tuple[int, int]:
        with self.lock:
            return len(self.accepted), len(self.refusals)

    def wait_accepted(self, more: int, timeout: float, what: str) -> None:
        target = self.count()[0] + more
        wait_for(lambda: self.count()[0] >= target, timeout, what)

    def wait_refused(self, more: int, timeout: float, what: str) -> None:
        target = self.count()[1] + more
        wait_for(lambda: self.count()[1] >= target, timeout, what)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.workers:
            thread.join(timeout=60)


def assert_settled_once(dsn: str, schema: str, ids: list[str]) -> None:
    """Every accepted message delivered, notified and indexed, with one ``Delivered`` each."""
    wait_for(
        lambda: settled(dsn, schema, ids) == len(ids),
        300,
        f"all {len(ids)} accepted messages to be delivered, notified and indexed",
    )
    counts = deliveries(dsn, schema)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [m for m, n in counts.items() if n > 1]


def assert_completed_once(
    runtime: Runtime, dsn: str, schema: str, ids: list[str], bob: Any
) -> None:
    """Every accepted message delivered, notified and indexed; one ``Delivered`` each; one
    frame each on ``bob``'s socket; every process of the runtime still running."""
    assert_settled_once(dsn, schema, ids)
    wait_for(lambda: set(bob.new_message_ids()) == set(ids), 60, "every frame on the socket")
    assert max(Counter(bob.new_message_ids()).values()) == 1
    for name, process in runtime.processes.items():
        assert process.proc is not None and process.proc.poll() is None, name


def ready_status(runtime: Runtime) -> int:
    try:
        return runtime.http.get("/health/ready", timeout=10).status_code
    except httpx.HTTPError:
        return 0


def assert_error_format(response: httpx.Response) -> None:
    assert response.headers.get("Retry-After", "").isdigit(), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "service_unavailable", body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["details"] == []
    assert "Traceback" not in response.text and "psycopg" not in response.text


@pytest.mark.timeout(600)
def test_postgres_stopped_under_load_answers_503_and_recovers_by_itself(
    private_pg: PrivatePostgres, redis_url: str, launch: Launch
) -> None:
    schema = private_schema(private_pg)
    env = {**services_env(schema, redis_url), "DATABASE_URL": private_pg.dsn, **SMALL_POOLS}
    runtime = launch(env)
    bob = connected(runtime.ws("bob"))
    load = Load(runtime.base_url).start()
    try:
        for mode in ("fast", "immediate"):
            load.wait_accepted(20, 60, "messages accepted")
            private_pg.stop(mode)
            load.wait_refused(5, 60, f"commands to answer 503 while PostgreSQL is down ({mode})")
            wait_for(lambda: ready_status(runtime) == 503, 30, "/health/ready to answer 503")
            checks = runtime.http.get("/health/ready").json()["checks"]
            assert checks["eventStore"] is False and checks["readStore"] is False, checks
            private_pg.start()
            wait_for(lambda: ready_status(runtime) == 200, 60, "/health/ready to answer 200")
            load.wait_accepted(20, 90, f"commands to be accepted again after the {mode} stop")
    finally:
        load.stop()
    try:
        assert not load.others, load.others[:10]
        for response in load.refusals:
            assert_error_format(response)
        # Failing fast: eventsourcing alone would retry for close to a minute per command.
        assert max(load.refusal_seconds) < 15, sorted(load.refusal_seconds)[-5:]
        ids = list(load.accepted)
        assert len(set(ids)) == len(ids)
        assert stored(private_pg.dsn, schema, ids) == set(ids)
        assert all_created(private_pg.dsn, schema) == set(ids)  # nothing stored twice
        assert_completed_once(runtime, private_pg.dsn, schema, ids, bob)
    finally:
        bob.close()


@pytest.mark.timeout(600)
def test_redis_restarted_mid_run_every_process_reconnects_and_every_message_completes(
    private_pg: PrivatePostgres, private_redis: PrivateRedis, launch: Launch
) -> None:
    schema = private_schema(private_pg)
    dsn = private_pg.dsn
    env = {**services_env(schema, private_redis.url), "DATABASE_URL": dsn, **SMALL_POOLS}
    runtime = launch(env)
    bob = connected(runtime.ws("bob"))
    load = Load(runtime.base_url).start()
    cursor = "0"
    late: list[WsClient] = []
    try:
        for _ in range(2):
            load.wait_accepted(30, 60, "messages accepted")
            private_redis.kill()
            wait_for(lambda: ready_status(runtime) == 503, 30, "/health/ready to answer 503")
            assert runtime.http.get("/health/ready").json()["checks"]["redis"] is False
            if not late:  # a socket opened while Redis is away works all the same
                late.append(connected(runtime.ws("bob")))
            private_redis.start()
            wait_for(lambda: ready_status(runtime) == 200, 60, "/health/ready to answer 200")
            load.wait_accepted(30, 60, "messages accepted again")
    finally:
        load.stop()
    try:
        assert not load.others, load.others[:10]
        ids = list(load.accepted)
        assert_settled_once(dsn, schema, ids)
        # The socket stayed open through both restarts and got every frame once.
        wait_for(lambda: set(bob.new_message_ids()) == set(ids), 60, "every frame on the socket")
        assert not bob.closed.is_set()
        frames = bob.of_type("message.new")
        assert max(Counter(f["message"]["id"] for f in frames).values()) == 1
        cursor = frames[-1]["cursor"]
        # The socket opened during the outage got every delivery after its ready cursor.
        opened_at = int(late[0].of_type("ready")[0]["cursor"])
        after = [f["message"]["id"] for f in frames if int(f["cursor"]) > opened_at]
        wait_for(lambda: late[0].new_message_ids() == after, 30, "the late socket's frames")
        late[0].close()
        # A new socket with ``since`` of an early cursor gets the rest, in order.
        early = frames[len(frames) // 2]["cursor"]
        again = connected(runtime.ws("bob", since=early))
        replayed = [f["message"]["id"] for f in again.of_type("message.new")]
        assert replayed == [f["message"]["id"] for f in frames[len(frames) // 2 + 1 :]]
        assert int(again.of_type("ready")[0]["cursor"]) >= int(cursor)
        again.close()
        for name, process in runtime.processes.items():
            assert process.proc is not None and process.proc.poll() is None, name
        assert json.dumps(runtime.http.get("/health/ready").json()["checks"])
    finally:
        bob.close()


@pytest.mark.timeout(600)
def test_rabbitmq_node_killed_and_restarted_mid_run_every_message_completes(
    private_pg: PrivatePostgres, private_rabbit: PrivateRabbit, redis_url: str, launch: Launch
) -> None:
    schema = private_schema(private_pg)
    dsn = private_pg.dsn
    env = {
        **services_env(schema, redis_url),
        "DATABASE_URL": dsn,
        "BROKER_URL": private_rabbit.url,
        **SMALL_POOLS,
    }
    runtime = launch(env)
    bob = connected(runtime.ws("bob"))
    load = Load(runtime.base_url).start()
    try:
        for _ in range(2):
            load.wait_accepted(30, 60, "messages accepted")
            private_rabbit.kill()
            wait_for(lambda: ready_status(runtime) == 503, 30, "/health/ready to answer 503")
            assert runtime.http.get("/health/ready").json()["checks"]["broker"] is False
            load.wait_accepted(10, 60, "commands accepted while the broker is down")
            private_rabbit.start()
            wait_for(lambda: ready_status(runtime) == 200, 60, "/health/ready to answer 200")
    finally:
        load.stop()
    try:
        assert not load.others, load.others[:10]
        ids = list(load.accepted)
        assert_completed_once(runtime, dsn, schema, ids, bob)
        assert not bob.closed.is_set()
    finally:
        bob.close()


def assert_answered_promptly(load: Load, dsn: str, schema: str) -> None:
    """Every send answered within 10 s (202, or 503 with ``Retry-After`` that the client
    retried), and every accepted message stored once and completed once."""
    assert not load.others, load.others[:10]
    assert load.slowest < 10, load.slowest
    for response in load.refusals:
        assert_error_format(response)
    ids = list(load.accepted)
    assert len(set(ids)) == len(ids)
    assert all_created(dsn, schema) == set(ids)  # nothing stored twice
    assert_settled_once(dsn, schema, ids)


@pytest.mark.timeout(300)
def test_a_stuck_holder_of_the_event_store_lock_does_not_freeze_sends(
    private_pg: PrivatePostgres, redis_url: str, launch: Launch
) -> None:
    """A session holds the event store's table lock and does not let go for 12 s: what a
    process stopped in the middle of a pipelined insert does (the server's idle-in-
    transaction timeout only starts once a whole pipeline has arrived), or a session
    without Courier's timeouts. Sends answer 503 after ``POSTGRES_LOCK_TIMEOUT`` instead
    of waiting for it, and are accepted once it lets go."""
    schema = private_schema(private_pg)
    dsn = private_pg.dsn
    env = {**services_env(schema, redis_url), "DATABASE_URL": dsn, **SMALL_POOLS}
    # The worker's saves time out as well: enough attempts that no job runs out of them
    # while the lock is held (what a job does then is the queues' retry policy).
    env.update({f"QUEUE_{name}_MAX_ATTEMPTS": "20" for name in QUEUES})
    runtime = launch(env)
    holding = threading.Event()  # only ever waited on to hold the lock for its length
    load = Load(runtime.base_url, interval=0.05).start()
    try:
        load.wait_accepted(20, 60, "messages accepted")
        with psycopg.connect(dsn, options=f"-csearch_path={schema}") as holder:
            holder.execute("LOCK TABLE messaging_events IN EXCLUSIVE MODE")
            holding.wait(12)
            refused = load.count()[1]
            holder.rollback()
        load.wait_accepted(20, 60, "messages accepted after the holder let go")
    finally:
        load.stop()
    print(f"stuck holder: slowest answer {load.slowest:.2f} s, {refused} refusals (503)")
    assert refused > 0
    assert_answered_promptly(load, dsn, schema)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["worker", "projections"])
def test_a_paused_process_never_freezes_sends(
    private_pg: PrivatePostgres, redis_url: str, launch: Launch, role: str
) -> None:
    """SIGSTOP a background process at 12 random moments under load, for a few seconds each
    (as a long GC pause or a frozen VM would): a stopped holder of the event store's table
    lock or of an open transaction is cut off by the server, every send is answered within
    10 s, and after SIGCONT every accepted message completes once."""
    schema = private_schema(private_pg)
    dsn = private_pg.dsn
    env = {**services_env(schema, redis_url), "DATABASE_URL": dsn, **SMALL_POOLS}
    runtime = launch(env)
    process = runtime.processes[role].proc
    assert process is not None
    moments = random.Random(f"pause-{role}")
    holding = threading.Event()  # only ever waited on to hold a pause for its length
    load = Load(runtime.base_url, interval=0.05).start()
    try:
        load.wait_accepted(20, 60, "messages accepted")
        for _ in range(12):
            holding.wait(moments.uniform(0.05, 0.6))
            process.send_signal(signal.SIGSTOP)
            try:
                holding.wait(moments.uniform(1.5, 5.5))
            finally:
                process.send_signal(signal.SIGCONT)
        load.wait_accepted(20, 60, "messages accepted after the last pause")
    finally:
        process.send_signal(signal.SIGCONT)
        load.stop()
    print(f"{role}: slowest answer {load.slowest:.2f} s, {len(load.refusals)} refusals (503)")
    assert_answered_promptly(load, dsn, schema)
    assert process.poll() is None, runtime.logs()[-4000:]
