"""Jobs/s of one Courier worker process against bare kombu on the same broker, in one run.

    .venv/bin/python -m benchmarks.jobs --broker redis://127.0.0.1:6379/13 \\
        --database postgresql://root@127.0.0.1:5432/test --jobs 3000

Rows of the table:

* ``kombu publish`` / ``kombu consume+ack``: one connection, one producer or consumer,
  JSON bodies of a job's size: the floor any kombu-based pipeline stands on.
* ``courier no-op jobs``: Courier's worker machinery alone (consumer thread, one
  thread per job, the ``job_runs`` start and finish rows, the acknowledgement) on one
  queue at concurrency 10, with a handler that does nothing.
* ``courier delivery jobs``: real ``MESSAGE_DELIVERY`` jobs (load the message from the
  event store, record ``Delivered``), published by the relay's own publisher.

Everything goes into a PostgreSQL schema made for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import psycopg
from kombu import Connection, Queue
from rich.console import Console
from rich.table import Table

from application.batches import BatchProcessor
from application.jobs import MESSAGE_CLEANUP, MESSAGE_DELIVERY, Job
from application.loading import Loader
from application.outgoing import Outgoing
from application.processing import Outcome, Processor
from domain.events import Context
from infrastructure.crypto import generate_master_key_spec
from infrastructure.eventreader import event_reader
from infrastructure.faults import FaultInjector
from infrastructure.notifiers import FlagIndexer
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from infrastructure.worker import BatchEngine, JobRunner, QueueConsumer, Workers

BENCH_QUEUE = "courier_bench_floor"


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def kombu_floor(url: str, jobs: int) -> tuple[float, float]:
    """Seconds to publish ``jobs`` bodies, then to consume and ack them, with bare kombu."""
    body = Job(MESSAGE_DELIVERY, uuid.uuid4(), "b0", "t1", 1, uuid.uuid4().hex).to_wire()
    queue = Queue(BENCH_QUEUE, routing_key=BENCH_QUEUE, durable=True)
    with Connection(url) as conn:
        bound = queue.bind(conn.default_channel)
        bound.declare()
        bound.purge()
        producer = conn.Producer(serializer="json")

        def publish() -> None:
            for _ in range(jobs):
                producer.publish(
                    body, exchange="", routing_key=BENCH_QUEUE, delivery_mode=2, retry=False
                )

        seen = 0

        def received(_body: Any, message: Any) -> None:
            nonlocal seen
            seen += 1
            message.ack()

        def consume() -> None:
            with conn.Consumer(queue, callbacks=[received], accept=["json"], prefetch_count=10):
                while seen < jobs:
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=1)

        published = timed(publish)
        consumed = timed(consume)
        bound.delete()
    return published, consumed


class NoOp(Processor):
    def run(self, job: Job) -> Outcome:
        return Outcome([])


def completed(container: Container, queue: str) -> float:
    value = container.stats.registry.get_sample_value(
        "courier_jobs_total", {"queue": queue, "outcome": "completed"}
    )
    return value or 0.0


@contextlib.contextmanager
def consuming(
    container: Container, queue: str, processor: Processor, batched: bool = False
) -> Iterator[None]:
    settings = replace(container.settings.queues[queue], concurrency=10)
    batches = None
    if batched:
        loader = Loader(container.messaging, event_reader(container.messaging.recorder))
        batches = BatchProcessor(processor, loader)
    runner = JobRunner(
        processor,
        container.delayed,
        container.settings.queues,
        FaultInjector(""),
        container.stats,
        container.runs,
        batches,
    )
    engine = BatchEngine(runner) if batched else None
    consumer = QueueConsumer(settings, container.broker, runner, engine)
    workers = Workers([consumer], engine)
    workers.start()
    try:
        yield
    finally:
        workers.stop()


def drain(
    container: Container, queue: str, jobs: int, processor: Processor, batched: bool = False
) -> float:
    """Seconds for one consumer of ``queue`` to complete ``jobs`` already published."""
    before = completed(container, queue)
    started = time.perf_counter()
    with consuming(container, queue, processor, batched):
        while completed(container, queue) - before < jobs:
            time.sleep(0.01)
        return time.perf_counter() - started


def courier_publish(container: Container, jobs: int) -> float:
    """Seconds for the relay's publisher to publish ``jobs`` no-op jobs, one call each."""
    batch = [Job(MESSAGE_CLEANUP, uuid.uuid4(), "noop", "t1") for _ in range(jobs)]

    def publish() -> None:
        for job in batch:
            container.broker.publish([job])

    return timed(publish)


def courier_noop(container: Container, jobs: int) -> float:
    app = container.messaging
    processor = NoOp(app, app.crypto, container.presence, None, FlagIndexer())  # type: ignore[arg-type]
    return drain(container, MESSAGE_CLEANUP, jobs, processor)


def courier_delivery(container: Container, jobs: int) -> float:
    sender = Context(actor_id="bench-sender", tenant_id="t1")
    ids = [
        container.messaging.send_direct(sender, f"r{i % 100}", Outgoing(content="x")).message.id
        for i in range(jobs)
    ]
    # As the relay publishes a page of the log: the jobs of one queue travel together.
    container.broker.publish([Job(MESSAGE_DELIVERY, mid, "b0", "t1") for mid in ids])
    app = container.messaging
    processor = Processor(app, app.crypto, container.presence, None, FlagIndexer())  # type: ignore[arg-type]
    return drain(container, MESSAGE_DELIVERY, jobs, processor, batched=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--database", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args()
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(args.database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    container = build(
        load(
            {
                "DATABASE_URL": args.database,
                "POSTGRES_SCHEMA": schema,
                "BROKER_URL": args.broker,
                "JWT_SECRET": "b" * 40,
                "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
            }
        ),
        TOOL,
    )
    try:
        for name in (MESSAGE_CLEANUP, MESSAGE_DELIVERY):
            with container.broker.connection() as conn:
                container.broker.queues[name].bind(conn.default_channel).purge()
        n = args.jobs
        published, consumed = kombu_floor(args.broker, n)
        courier_published = courier_publish(container, n)
        noop = courier_noop(container, n)
        delivery = courier_delivery(container, n)
        # Measured again last: on a shared machine the load drifts during a run.
        published_after, consumed_after = kombu_floor(args.broker, n)
    finally:
        container.stop()
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    title = (
        f"jobs/s in one process, {args.broker.split('://')[0]}, {n} jobs each, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
    )
    table = Table(title=title)
    for column in ("path", "seconds", "jobs/s", "vs kombu (mean of first and last)"):
        table.add_column(column, justify="right" if column != "path" else "left")
    publish_floor = (published + published_after) / 2
    consume_floor = (consumed + consumed_after) / 2
    rows = (
        ("kombu publish (first)", published, publish_floor),
        ("courier publish (relay's publisher, 1 job per call)", courier_published, publish_floor),
        ("kombu consume+ack, prefetch 10 (first)", consumed, consume_floor),
        ("courier worker, no-op jobs (concurrency 10)", noop, consume_floor),
        (
            "courier worker, delivery jobs (batched, units of work)",
            delivery,
            consume_floor,
        ),
        ("kombu publish (last)", published_after, publish_floor),
        ("kombu consume+ack, prefetch 10 (last)", consumed_after, consume_floor),
    )
    for label, seconds, floor in rows:
        table.add_row(label, f"{seconds:.2f}", f"{n / seconds:,.0f}", f"{floor / seconds:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()
