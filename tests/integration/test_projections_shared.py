"""One reader for every view of a process: each view applies each event exactly once,
only the events it asks for, and a view that fails is retried alone while the others
go on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, func, select

from domain.conversation import Conversation
from domain.events import Context
from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from infrastructure.storage.positions import read_position
from projections.shared import SharedFollower
from tests.conftest import PG_DSN
from tests.e2e.harness import wait_for

applied = Table(
    "test_applied",
    MetaData(),
    Column("view", String(32), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(64), nullable=False),
)


class Recording:
    """Writes one row per event it is given; fails its first ``failures`` batches after
    writing (their rows must vanish with the transaction)."""

    def __init__(self, name: str, failures: int = 0, handles: tuple[type, ...] | None = None):
        self.name = name
        self.failures = failures
        if handles is not None:
            self.handles = handles

    def apply(self, event: Any, conn: Connection, position: int) -> None:
        self.apply_many([(position, event)], conn)

    def apply_many(self, batch: Sequence[tuple[int, Any]], conn: Connection) -> None:
        rows = [{"view": self.name, "position": p, "kind": type(e).__name__} for p, e in batch]
        if rows:
            conn.execute(applied.insert(), rows)
        if self.failures:
            self.failures -= 1
            raise RuntimeError(f"{self.name} fails on purpose")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    env = {
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "COURIER_DATA_DIR": str(tmp_path),
    }
    if request.param == "postgres":
        env |= {"DATABASE_URL": PG_DSN, "POSTGRES_SCHEMA": request.getfixturevalue("pg_schema")}
    container = build(load(env), TOOL)
    applied.create(container.engine)
    yield container
    container.stop()


def started(n: int) -> Conversation:
    meta = Context(f"user-{n}", "t1").as_meta()
    return Conversation(
        tenant_id="t1", kind="group", participant_ids=[f"user-{n}", "x"], title=None, meta=meta
    )


def positions(container: Container, view: str) -> list[int]:
    with container.engine.connect() as conn:
        query = select(applied.c.position).where(applied.c.view == view)
        return sorted(conn.execute(query).scalars())


def test_every_view_applies_every_event_once_despite_failures(container: Container) -> None:
    app = container.messaging
    follower = SharedFollower(
        container.event_log, container.engine, poll_interval=0.01, batch_size=7
    )
    steady = follower.add(Recording("steady"))
    flaky = follower.add(Recording("flaky", failures=2))
    picky = follower.add(Recording("picky", handles=(Conversation.ParticipantsAdded,)))
    app.save(*[started(n) for n in range(30)])
    follower.start()
    try:
        head = app.recorder.max_notification_id()
        for runner in (steady, flaky, picky):
            assert runner.catch_up(head, timeout=30), runner.view.name
        more = started(99)
        more.add_participants(["y"], Context("user-99", "t1").as_meta())
        app.save(more, *[started(n) for n in range(100, 120)])
        head = app.recorder.max_notification_id()
        for runner in (steady, flaky, picky):
            assert runner.catch_up(head, timeout=30), runner.view.name
    finally:
        follower.stop()
        follower.join(timeout=5)

    with container.engine.connect() as conn:
        stored = [n.id for n in app.recorder.select_notifications(start=1, limit=1000)]
        kinds = dict(conn.execute(select(applied.c.position, applied.c.kind)).all())
        assert read_position(conn, "flaky") == read_position(conn, "steady") == head
        assert (
            conn.execute(select(func.count()).select_from(applied)).scalar() == len(stored) * 2 + 1
        )
    assert positions(container, "steady") == positions(container, "flaky") == stored
    assert positions(container, "picky") == [p for p in stored if kinds[p] == "ParticipantsAdded"]


def test_a_view_failing_for_good_does_not_hold_the_others(container: Container) -> None:
    app = container.messaging
    follower = SharedFollower(container.event_log, container.engine, poll_interval=0.01)
    steady = follower.add(Recording("steady"))
    failing = Recording("broken", failures=10**6)
    broken = follower.add(failing)
    app.save(*[started(n) for n in range(10)])
    follower.start()
    try:
        assert steady.catch_up(timeout=30)
        app.save(*[started(n) for n in range(10, 20)])
        assert steady.catch_up(timeout=30)
        wait_for(lambda: failing.failures < 10**6 - 2, 10, "the broken view retried")
    finally:
        follower.stop()
        follower.join(timeout=5)
    assert len(positions(container, "steady")) == 20
    assert positions(container, "broken") == []
    assert broken.committed_position() == 0
