"""Tamper evidence on PostgreSQL: the chain names the first bad position, then heals.

The running service stores real events; the test then changes the stored log the way
someone with database access could — one byte of an event's state, a deleted row, two
events' positions swapped — and asks both `courier audit verify` and
GET /api/audit/verify. Each must fail naming the first bad position; once the log is
restored, both pass again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import delete
from starlette.testclient import TestClient

from application.messaging import Outgoing
from domain.events import Context
from infrastructure.bootstrap import ALL, Container, build
from infrastructure.chain import check_signature, generate_signing_key
from infrastructure.crypto import generate_master_key_spec
from infrastructure.settings import load
from interfaces.cli import main
from interfaces.http.app import create_app
from projections.chain import ChainView
from projections.runner import RawLog
from projections.tables import audit_chain
from tests.conftest import PG_DSN
from tests.e2e.harness import JWT_SECRET, auth, wait_for

pytestmark = pytest.mark.services

Tamper = Callable[[psycopg.Connection[Any], str, int, int], Callable[[], None]]


@pytest.fixture
def env(pg_schema: str) -> dict[str, str]:
    return {
        "DATABASE_URL": PG_DSN,
        "POSTGRES_SCHEMA": pg_schema,
        "JWT_SECRET": JWT_SECRET,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "AUDIT_SIGNING_KEY": generate_signing_key(),
        "COURIER_POLL_INTERVAL": "0.02",
    }


@pytest.fixture
def container(env: dict[str, str]) -> Iterator[Container]:
    container = build(load(env), ALL)
    container.start()
    alice = Context("alice", "t1")
    for n in range(6):
        container.messaging.send_direct(alice, f"user-{n % 3}", Outgoing(content=f"note {n}"))
    yield container
    container.stop()


def chained(container: Container) -> int:
    last = container.event_log.last_position()
    return wait_for(
        lambda: last if container.chain.chained_through() >= last else None, 30, "the chain"
    )


def cli_verify(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["audit", "verify", "--actor", "test", *args], env=env)
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def api_verify(container: Container) -> dict[str, Any]:
    with TestClient(create_app(container)) as client:
        response = client.get("/api/audit/verify", headers=auth("auditor-1", roles=["auditor"]))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def positions(conn: psycopg.Connection[Any], schema: str) -> list[int]:
    rows = conn.execute(
        f"SELECT notification_id FROM {schema}.messaging_events ORDER BY notification_id"
    ).fetchall()
    return [int(r[0]) for r in rows]


def change_a_byte(
    conn: psycopg.Connection[Any], schema: str, p: int, _q: int
) -> Callable[[], None]:
    table = f"{schema}.messaging_events"
    row = conn.execute(f"SELECT state FROM {table} WHERE notification_id = %s", [p]).fetchone()
    assert row is not None
    conn.execute(
        f"UPDATE {table} SET state = set_byte(state, 12, get_byte(state, 12) # 1) "
        "WHERE notification_id = %s",
        [p],
    )

    def restore() -> None:
        conn.execute(f"UPDATE {table} SET state = %s WHERE notification_id = %s", [row[0], p])

    return restore


def delete_a_row(conn: psycopg.Connection[Any], schema: str, p: int, _q: int) -> Callable[[], None]:
    table = f"{schema}.messaging_events"
    row = conn.execute(
        f"DELETE FROM {table} WHERE notification_id = %s "
        "RETURNING originator_id, originator_version, topic, state, notification_id",
        [p],
    ).fetchone()
    assert row is not None

    def restore() -> None:
        conn.execute(
            f"INSERT INTO {table} "
            "(originator_id, originator_version, topic, state, notification_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            list(row),
        )

    return restore


def swap_two(conn: psycopg.Connection[Any], schema: str, p: int, q: int) -> Callable[[], None]:
    table = f"{schema}.messaging_events"

    def swap() -> None:
        conn.execute(f"UPDATE {table} SET notification_id = -1 WHERE notification_id = %s", [p])
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = %s", [p, q])
        conn.execute(f"UPDATE {table} SET notification_id = %s WHERE notification_id = -1", [q])

    swap()
    return swap


@pytest.mark.parametrize(
    "tamper", [change_a_byte, delete_a_row, swap_two], ids=lambda t: t.__name__
)
def test_verify_names_the_first_bad_position_then_passes_once_restored(
    container: Container, env: dict[str, str], pg_schema: str, tamper: Tamper
) -> None:
    chained(container)
    code, verdict = cli_verify(env)
    assert code == 0 and verdict["ok"] is True and verdict["firstBadPosition"] is None, verdict
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        stored = positions(conn, pg_schema)
        p, q = stored[4], stored[7]
        restore = tamper(conn, pg_schema, p, q)
        try:
            code, verdict = cli_verify(env)
            assert code == 1, verdict
            assert verdict["ok"] is False and verdict["firstBadPosition"] == p, verdict
            answer = api_verify(container)
            assert answer["ok"] is False and answer["firstBadPosition"] == p, answer
            assert answer["checked"] == 4  # the events before p still check out
        finally:
            restore()
    chained(container)
    code, verdict = cli_verify(env)
    assert code == 0 and verdict["ok"] is True, verdict
    answer = api_verify(container)
    assert answer == {**answer, "ok": True, "firstBadPosition": None}
    assert answer["checked"] >= len(stored)


def test_a_signed_checkpoint_catches_a_chain_recomputed_over_a_changed_log(
    container: Container, env: dict[str, str], pg_schema: str, tmp_path: Path
) -> None:
    before = chained(container)
    result = CliRunner().invoke(main, ["audit", "checkpoint"], env=env)
    assert result.exit_code == 0, result.output
    checkpoint = json.loads(result.stdout)
    key = container.chain.key
    assert key is not None
    position, digest = check_signature(checkpoint, key.public_key())
    # The command records its own AuditQueried event, which the chain may take in
    # before or after it signs: the checkpoint covers at least what was chained before.
    assert before <= position <= container.chain.chained_through() and len(digest) == 32
    kept = tmp_path / "checkpoints.jsonl"  # e.g. a WORM bucket, outside the database
    kept.write_text(result.stdout)

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        target = positions(conn, pg_schema)[2]
        restore = change_a_byte(conn, pg_schema, target, 0)
        # The attacker recomputes the chain over the changed log and drops the
        # checkpoints kept in the database.
        conn.execute(f"DELETE FROM {pg_schema}.audit_checkpoints")
        with container.engine.begin() as db:
            db.execute(delete(audit_chain))
            ChainView().apply_many(RawLog(container.messaging).read(0, 100_000), db)
        try:
            assert cli_verify(env)[1]["ok"] is True  # without the kept copy it looks fine
            code, verdict = cli_verify(env, "--checkpoints", str(kept))
            assert code == 1 and verdict["ok"] is False, verdict
            assert verdict["firstBadPosition"] == position
            assert "checkpoint" in verdict["reason"]
        finally:
            restore()
