"""Replay benchmark: rebuild each projection from a log of N events, against the floor.

    .venv/bin/python -m benchmarks.replay --events 200000

In a fresh PostgreSQL schema it stores N events of realistic message lifecycles
(conversation started; message created, delivered, notified, indexed, viewed, read;
a page view now and then), then measures in the same run:

* the floor: reading and decoding the whole notification log, nothing else;
* ``courier replay`` of every replayable projection (shadow build and swap);
* building the audit hash chain, and ``courier audit verify`` over it.

Every figure is events per second; ``x floor`` is the share of the floor's rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import psycopg
from rich.console import Console
from rich.table import Table

from application.messaging import Messaging
from domain.access import PAGE, Access
from domain.conversation import Conversation
from domain.events import Context, system_context
from domain.message import Message
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from infrastructure.storage.eventlog import ApplicationLog, RawLog
from projections.catalog import AUDIT_CHAIN, PROJECTIONS
from projections.replay import rebuild
from projections.shared import SharedFollower

DEFAULT_DSN = "postgresql://root@127.0.0.1:5432/test"
TENANT = "bench"
PAIRS = 500
EVENTS_PER_MESSAGE = 6
SAVE_BATCH = 400  # aggregates per save(): one transaction, as group commit does


def lifecycle(conversation: Conversation, n: int) -> Message:
    """One message with the events a delivered, read message has (6 events)."""
    sender, recipient = conversation.participant_ids
    meta = Context(sender, TENANT, correlation_id=f"req-{n}").as_meta()
    work = system_context(TENANT, f"req-{n}", f"job-{n}").as_meta()
    message = Message(
        id=uuid4(),
        tenant_id=TENANT,
        conversation_id=conversation.id,
        sender_id=sender,
        recipient_ids=[recipient],
        kind="direct",
        encrypted=False,
        notify=True,
        index=True,
        content=f"message {n}: " + "lorem ipsum " * 8,
        sealed=None,
        end_to_end=False,
        content_digest=f"{n:064x}",
        client_message_id=None,
        meta=meta,
    )
    message.deliver("0", online=[], offline=[recipient], meta=work)
    message.mark_notified("0", {recipient: {"channel": "push", "outcome": "sent"}}, work)
    message.mark_indexed(work)
    reader = Context(recipient, TENANT, correlation_id=f"view-{n}").as_meta()
    message.record_view(viewer_id=recipient, what="message", meta=reader)
    message.mark_read(recipient, meta=reader)
    return message


def populate(app: Messaging, events: int, console: Console) -> int:
    """Store about ``events`` events; the number stored."""
    pairs = [
        Conversation(
            tenant_id=TENANT,
            kind="direct",
            participant_ids=[f"clinician-{i}", f"patient-{i}"],
            title=None,
            meta=Context(f"clinician-{i}", TENANT).as_meta(),
        )
        for i in range(PAIRS)
    ]
    app.save(*pairs)
    stored, n = PAIRS, 0
    started = time.monotonic()
    while stored < events:
        pending: list[Any] = []
        while len(pending) < SAVE_BATCH and stored < events:
            conversation = pairs[n % PAIRS]
            pending.append(lifecycle(conversation, n))
            stored += EVENTS_PER_MESSAGE
            n += 1
            if n % 10 == 0:  # a page of the conversation, now and then
                meta = Context(conversation.participant_ids[1], TENANT).as_meta()
                ids = [str(pending[-1].id)]
                pending.append(Access.viewed(meta, PAGE, conversation.id, ids))
                stored += 1
        app.save(*pending)
    console.log(f"stored {stored:,} events in {time.monotonic() - started:.1f} s")
    return stored


def floor(container: Container) -> tuple[int, float]:
    """Read and decode the whole log, in the replay's batch size: (events, seconds)."""
    log_ = ApplicationLog(container.messaging)
    started, position, count = time.monotonic(), 0, 0
    while batch := log_.read(position, 2000):
        position, count = batch[-1][0], count + len(batch)
    return count, time.monotonic() - started


def build_chain(container: Container) -> tuple[int, float]:
    log_ = RawLog(container.messaging)
    runner = SharedFollower(log_, container.engine).add(AUDIT_CHAIN.view(), raw=True)
    started, position, count = time.monotonic(), runner.committed_position(), 0
    while batch := log_.read(position, 2000):
        runner.apply_batch(batch)
        position, count = batch[-1][0], count + len(batch)
    return count, time.monotonic() - started


def measure(container: Container, schema: str, console: Console) -> dict[str, Any]:
    results: dict[str, Any] = {}
    count, seconds = floor(container)
    results["floor: read + decode the log"] = (count, seconds)
    console.log(f"floor: {count / seconds:,.0f} events/s")
    for projection in PROJECTIONS:
        if not projection.replayable:
            continue
        done = rebuild(container.engine, container.event_log, projection, batch=2000, schema=schema)
        results[f"replay {projection.name}"] = (done.events, done.seconds)
        console.log(f"replay {projection.name}: {done.rate:,.0f} events/s")
    results["build the audit chain"] = build_chain(container)
    started = time.monotonic()
    verdict = container.chain.verify()
    assert verdict.ok, verdict
    results["audit verify"] = (verdict.checked, time.monotonic() - started)
    return results


def report(events: int, results: dict[str, Any], console: Console) -> dict[str, Any]:
    floor_count, floor_seconds = results["floor: read + decode the log"]
    floor_rate = floor_count / floor_seconds
    table = Table(title=f"Replay of {events:,} events (PostgreSQL, this machine, one run)")
    for column in ("step", "events", "seconds", "events/s", "x floor"):
        table.add_column(column, justify="left" if column == "step" else "right")
    rows = {}
    for step, (count, seconds) in results.items():
        rate = count / seconds if seconds else 0.0
        rows[step] = {"events": count, "seconds": round(seconds, 2), "eventsPerSecond": round(rate)}
        table.add_row(
            step, f"{count:,}", f"{seconds:.1f}", f"{rate:,.0f}", f"{rate / floor_rate:.2f}"
        )
    console.print(table)
    return {"events": events, "floorEventsPerSecond": round(floor_rate), "steps": rows}


@contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    name = "bench_replay_" + uuid.uuid4().hex[:8]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def run(events: int, dsn: str, console: Console) -> dict[str, Any]:
    from infrastructure.crypto import generate_master_key_spec

    with fresh_schema(dsn) as schema:
        env = {
            "DATABASE_URL": dsn,
            "POSTGRES_SCHEMA": schema,
            "JWT_SECRET": "bench-" + "x" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        }
        container = build(load(env), TOOL)
        try:
            stored = populate(container.messaging, events, console)
            return report(stored, measure(container, schema, console), console)
        finally:
            container.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--database-url", default=DEFAULT_DSN)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    result = run(args.events, args.database_url, console)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
