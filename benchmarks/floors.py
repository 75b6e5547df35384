"""Floors: what the parts Courier is built from do on this machine, in the same run.

* PostgreSQL: one-row INSERT + COMMIT transactions from 8 client threads.
* kombu: publish N job-sized messages, then consume + ack them, one connection.
* Starlette: a bare endpoint under uvicorn, hit by the same load generator as W1 (its
  own CPU per request is in the figures: the floor is the server's, not the client's).
* Notification log: read and decode every event of the run's event store.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

from application.jobs import MESSAGE_DELIVERY
from benchmarks import load
from benchmarks.load import Call, LoadResult, closed_loop
from benchmarks.runtime import ROOT, free_port, wait_until
from benchmarks.stats import rate

FLOOR_TABLE = "bench_floor_inserts"
FLOOR_QUEUE = "courier.bench.floor"


def postgres_inserts(
    database_url: str, schema: str, seconds: float, clients: int = 8
) -> dict[str, Any]:
    """Committed one-row transactions per second, ``clients`` threads for ``seconds``.

    A regular table, not a TEMP one: PostgreSQL does not wait for the WAL flush when a
    transaction wrote only temporary tables, which would make the floor a fake one.
    """
    options = f"-csearch_path={schema}"
    with psycopg.connect(database_url, autocommit=True, options=options) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (id bigserial PRIMARY KEY, payload text)"
        )
    counts = [0] * clients
    start = threading.Barrier(clients + 1)
    stop = threading.Event()
    payload = "x" * 200

    def insert(slot: int) -> None:
        with psycopg.connect(database_url, options=options) as conn:
            start.wait()
            while not stop.is_set():
                conn.execute(f"INSERT INTO {FLOOR_TABLE} (payload) VALUES (%s)", (payload,))
                conn.commit()
                counts[slot] += 1

    threads = [threading.Thread(target=insert, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    wall = time.perf_counter() - began
    with psycopg.connect(database_url, autocommit=True, options=options) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
    return {
        "clients": clients,
        "transactions": sum(counts),
        "wallS": round(wall, 3),
        "txPerS": rate(sum(counts), wall),
    }


def kombu_roundtrip(broker_url: str, messages: int, seconds: float = 30.0) -> dict[str, Any]:
    """Publish up to ``messages`` JSON jobs (for at most ``seconds``), then consume and
    ack them all, on one connection."""
    from kombu import Queue

    from infrastructure.broker import EXCHANGE, Broker

    broker = Broker(broker_url)
    queue = Queue(FLOOR_QUEUE, exchange=EXCHANGE, routing_key=FLOOR_QUEUE, durable=True)
    body = {
        "queue": MESSAGE_DELIVERY,
        "messageId": str(uuid.uuid4()),
        "part": "b0",
        "tenantId": "bench",
        "attempt": 1,
        "correlationId": uuid.uuid4().hex,
    }
    received = 0

    def on_message(_body: Any, message: Any) -> None:
        nonlocal received
        message.ack()
        received += 1

    with broker.connection() as conn:
        conn.ensure_connection(max_retries=3)
        bound = queue.bind(conn.default_channel)
        bound.declare()
        bound.purge()
        producer = conn.Producer(serializer="json")
        began = time.perf_counter()
        stop_at = began + seconds
        published = 0
        for i in range(messages):
            if time.perf_counter() > stop_at:
                break
            published += 1
            producer.publish(
                {**body, "part": f"b{i}"},
                exchange="",
                routing_key=FLOOR_QUEUE,
                delivery_mode=2,
                message_id=str(i),
                retry=True,
            )
        publishing = time.perf_counter() - began
        began = time.perf_counter()
        with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            deadline = time.monotonic() + 120
            while received < published and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=5)
                except TimeoutError:
                    break
        consuming = time.perf_counter() - began
        bound.delete()
    return {
        "messages": published,
        "consumed": received,
        "publishPerS": rate(published, publishing),
        "consumeAckPerS": rate(received, consuming),
        "roundTripPerS": rate(received, publishing + consuming),
    }


def starlette_requests(
    calls: Sequence[Call], clients: int, log_dir: Path, seconds: float = 30.0
) -> dict[str, Any]:
    """Requests/s of the bare endpoint (``benchmarks.floor_app``) under uvicorn.

    ``clients`` connections back to back for ``seconds``, the calls sent over and over.
    """
    port = free_port()
    log_path = log_dir / "floor-starlette.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks.floor_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-keep-alive",
                "5",
            ],
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _answers(base, server), 30, "the bare Starlette app")
            result = load.run(_hit(base, calls, clients, seconds))
        finally:
            server.terminate()
            server.wait(timeout=15)
    return result.summary()


def _answers(base: str, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        raise RuntimeError("the bare Starlette app exited")
    try:
        return httpx.get(base + "/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def _hit(base: str, calls: Sequence[Call], clients: int, seconds: float) -> LoadResult:
    await closed_loop(base, calls[: min(len(calls), 200)], clients)  # warm up
    return await closed_loop(base, calls, clients, seconds=seconds, repeat=True)


def notification_log(env: dict[str, str], page: int = 1000) -> tuple[dict[str, Any], list[Any]]:
    """Read and decode every event of the run's store; the figures and the events."""
    from infrastructure.runtime.bootstrap import TOOL, build
    from infrastructure.settings import load

    container = build(load(env), TOOL, apply_migrations=False)
    try:
        recorder = container.messaging.recorder
        mapper = container.messaging.mapper
        events: list[Any] = []
        position = 0
        began = time.perf_counter()
        while True:
            notifications = recorder.select_notifications(
                start=position, limit=page, inclusive_of_start=False
            )
            if not notifications:
                break
            events.extend(mapper.to_domain_event(n) for n in notifications)
            position = notifications[-1].id
        wall = time.perf_counter() - began
    finally:
        container.stop()
    figures = {
        "events": len(events),
        "wallS": round(wall, 3),
        "eventsPerS": rate(len(events), wall),
    }
    return figures, events
