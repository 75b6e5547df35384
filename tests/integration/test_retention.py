"""Retention and legal hold against real stores: expired content keys go, the trail stays."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import select

from application.outgoing import Outgoing
from application.ports import USER_KEY
from application.retention import LegalHolds, Retention
from domain.events import Context
from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from infrastructure.tables import job_runs
from projections.audit_queries import EventFilter
from tests.conftest import PG_DSN
from tests.e2e.harness import wait_for

ALICE = Context("alice", "t1")
COMPLIANCE = Context("compliance-1", "t1", actor_role="auditor")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sealed_for(*people: str) -> dict[str, object]:
    """What a client that seals end to end sends (the server never sees the plaintext)."""
    return {
        "ciphertext": b64(b"c" * 40),
        "iv": b64(b"i" * 12),
        "authTag": b64(b"t" * 16),
        "wrappedKeys": {person: b64(b"w" * 512) for person in people},
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    env = {
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "COURIER_POLL_INTERVAL": "0.02",
        "RETENTION_DAYS": "30",
        "RETENTION_INTERVAL_SECONDS": "1",
        "COURIER_DATA_DIR": str(tmp_path),
    }
    if request.param == "postgres":
        env |= {"DATABASE_URL": PG_DSN, "POSTGRES_SCHEMA": request.getfixturevalue("pg_schema")}
    container = build(load(env), ALL)
    container.start()
    yield container
    container.stop()


def caught_up(container: Container) -> None:
    for runner in container.projections:
        assert runner.catch_up(timeout=30), runner.view.name


def test_retention_shreds_expired_keys_keeps_held_ones_and_every_event(
    container: Container,
) -> None:
    app = container.messaging
    ward = app.start_conversation(ALICE, "group", ["bob"], "ward")
    clinic = app.start_conversation(ALICE, "group", ["carol"], "clinic")
    expiring = app.send_group(ALICE, ward.id, Outgoing(sealed=sealed_for("alice", "bob")))
    held = app.send_group(ALICE, clinic.id, Outgoing(sealed=sealed_for("alice", "carol")))
    plain = app.send_group(ALICE, ward.id, Outgoing(content="plain text"))
    LegalHolds(app).place(COMPLIANCE, clinic.id, "litigation hold LH-17")
    caught_up(container)
    assert container.audit.holds("t1")[0]["placedBy"] == "compliance-1"

    retention = Retention(app, container.audit, days=30)
    assert retention.run(datetime.now(UTC)).shredded == 0  # nothing is 30 days old yet
    later = datetime.now(UTC) + timedelta(days=31)
    report = retention.run(later)
    assert (report.shredded, report.failed) == (1, 0)

    def shredded(mid: UUID) -> bool:
        return app.get_message("t1", mid).shredded

    assert shredded(expiring.message.id)
    assert app.crypto.vault.get(expiring.message.id, USER_KEY, "bob") is None
    assert not shredded(held.message.id)
    assert app.crypto.vault.get(held.message.id, USER_KEY, "carol") is not None
    assert not shredded(plain.message.id)  # no content key: its content is in the log

    caught_up(container)
    trail, _ = container.audit.trail("t1", str(expiring.message.id), None, 100) or ([], None)
    kinds = [(e["type"], e["actorId"]) for e in trail]
    assert kinds[0] == ("Created", "alice") and ("Shredded", "system") in kinds
    assert next(e for e in trail if e["type"] == "Shredded")["data"]["reason"] == "retention"

    LegalHolds(app).release(COMPLIANCE, clinic.id, "case closed")
    caught_up(container)
    assert container.audit.holds("t1") == []
    assert retention.run(later).shredded == 1
    assert shredded(held.message.id)
    holds = [
        e["type"]
        for e in container.audit.events("t1", EventFilter(str(clinic.id)), None, 100)[0]
        if e["type"].startswith("LegalHold")
    ]
    assert holds == ["LegalHoldPlaced", "LegalHoldReleased"]


def test_the_relay_schedules_the_cleanup_job_and_a_worker_runs_it(container: Container) -> None:
    def cleanup_runs() -> list[str]:
        with container.engine.connect() as conn:
            query = select(job_runs.c.outcome).where(job_runs.c.queue == "MESSAGE_CLEANUP")
            return [str(o) for o in conn.execute(query).scalars()]

    outcomes = wait_for(
        lambda: [o for o in cleanup_runs() if o != "active"] or None, 30, "a cleanup run"
    )
    assert set(outcomes) == {"completed"}
