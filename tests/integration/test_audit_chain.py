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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy import delete
from starlette.testclient import TestClient

from application.outgoing import Outgoing
from application.policies import pending_jobs
from domain.events import Context
from infrastructure.checkpoints import ChainBroken, check_signature, generate_signing_key
from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from infrastructure.storage.eventlog import RawLog
from infrastructure.storage.positions import read_position
from interfaces.cli import main
from interfaces.http.app import create_app
from projections.chain import ChainView
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
            # Without the kept copy the chain looks fine, but the audit entries still
            # say what the event said before it was changed.
            code, verdict = cli_verify(env)
            assert code == 1 and verdict["firstBadPosition"] == target, verdict
            assert "audit entry" in verdict["reason"] or "decoded" in verdict["reason"], verdict
            code, verdict = cli_verify(env, "--checkpoints", str(kept))
            assert code == 1 and verdict["ok"] is False, verdict
            assert verdict["firstBadPosition"] == position
            assert "checkpoint" in verdict["reason"]
        finally:
            restore()


# ---- what auditors read, cut tails, scheduled checkpoints -----------------------------


@contextmanager
def running(env: dict[str, str]) -> Iterator[Container]:
    container = build(load(env), ALL)
    container.start()
    alice = Context("alice", "t1")
    sent = []
    try:
        for n in range(6):
            outgoing = Outgoing(content=f"note {n}")
            sent.append(container.messaging.send_direct(alice, f"user-{n % 3}", outgoing))
        container.sent = [r.message.id for r in sent]  # type: ignore[attr-defined]
        yield container
    finally:
        container.stop()


def settled(container: Container) -> int:
    """Wait until every message is done with and the chain and audit view took it all in."""
    sent = container.sent  # type: ignore[attr-defined]

    def done() -> int | None:
        if any(pending_jobs(container.messaging.get_message("t1", mid)) for mid in sent):
            return None
        last = container.event_log.last_position()
        with container.engine.connect() as conn:
            audit = read_position(conn, "audit")
        return last if min(audit, container.chain.chained_through()) >= last else None

    return wait_for(done, 30, "every message done with, chained and audited")


def edit_an_actor(conn: psycopg.Connection[Any], schema: str, p: int) -> None:
    conn.execute(
        f"UPDATE {schema}.audit_events SET actor_id = 'someone-else' WHERE position = %s", [p]
    )


def edit_the_data(conn: psycopg.Connection[Any], schema: str, p: int) -> None:
    conn.execute(
        f"UPDATE {schema}.audit_events SET data = data || '{{\"recipientIds\": []}}'::jsonb "
        "WHERE position = %s",
        [p],
    )


def delete_an_entry(conn: psycopg.Connection[Any], schema: str, p: int) -> None:
    conn.execute(f"DELETE FROM {schema}.audit_events WHERE position = %s", [p])


def add_an_access_row(conn: psycopg.Connection[Any], schema: str, p: int) -> None:
    conn.execute(
        f"INSERT INTO {schema}.audit_access (tenant_id, owner_id, position, message_id) "
        "VALUES ('t1', 'user-9', %s, 'made-up')",
        [p],
    )


@pytest.mark.parametrize(
    "tamper",
    [edit_an_actor, edit_the_data, delete_an_entry, add_an_access_row],
    ids=lambda t: t.__name__,
)
def test_a_changed_audit_table_is_detected_at_its_position(
    env: dict[str, str], pg_schema: str, tamper: Callable[..., None]
) -> None:
    with running({**env, "AUDIT_VERIFY_FULL_SECONDS": "0"}) as container:
        settled(container)
        first = api_verify(container)
        assert first["ok"] is True and first["auditedThrough"] >= 6, first
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            created = conn.execute(
                f"SELECT position FROM {pg_schema}.audit_events WHERE type = 'Created' "
                "AND aggregate_type = 'Message' ORDER BY position"
            ).fetchall()
            p = int(created[2][0])
            tamper(conn, pg_schema, p)
        answer = api_verify(container)
        assert answer["ok"] is False and answer["firstBadPosition"] == p, answer
        assert answer["checked"] >= p and "audit" in answer["reason"], answer
        code, verdict = cli_verify(env)
        assert code == 1 and verdict["firstBadPosition"] == p, verdict


def cut_the_tail(conn: psycopg.Connection[Any], schema: str, keep: int) -> None:
    """What someone who wants the last events gone does: every trace after ``keep``."""
    for table, column in (
        ("messaging_events", "notification_id"),
        ("audit_chain", "position"),
        ("audit_events", "position"),
        ("audit_subjects", "position"),
        ("audit_access", "position"),
    ):
        conn.execute(f"DELETE FROM {schema}.{table} WHERE {column} > %s", [keep])
    conn.execute(f"UPDATE {schema}.followers SET position = %s WHERE position > %s", [keep, keep])


def test_deleting_the_last_events_and_their_links_is_detected(
    env: dict[str, str], pg_schema: str, tmp_path: Path
) -> None:
    with running(env) as container:
        last = settled(container)
        signed = container.chain.checkpoint()
        assert signed["position"] == last
        kept = tmp_path / "checkpoints.jsonl"
        kept.write_text(json.dumps(signed) + "\n")
        ok = api_verify(container)
        assert ok["ok"] is True and ok["checkpoint"]["position"] == last, ok
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            keep = positions(conn, pg_schema)[-4]
            cut_the_tail(conn, pg_schema, keep)
            # The checkpoint in the database is enough: verified against automatically.
            answer = api_verify(container)
            assert answer["ok"] is False and keep < answer["firstBadPosition"], answer
            code, verdict = cli_verify(env)
            assert code == 1 and keep < verdict["firstBadPosition"], verdict
            # The stored checkpoints removed too: the API process remembers what it saw,
            # the kept copy outside the database still catches it.
            conn.execute(f"DELETE FROM {pg_schema}.audit_checkpoints")
            answer = api_verify(container)
            assert answer["ok"] is False and keep < answer["firstBadPosition"], answer
            code, verdict = cli_verify(env, "--checkpoints", str(kept))
            assert code == 1 and keep < verdict["firstBadPosition"], verdict
            # The scheduled signer does not bless the shortened chain either.
            with pytest.raises(ChainBroken):
                conn.execute(
                    f"INSERT INTO {pg_schema}.audit_checkpoints "
                    "(position, signed_at, key_id, body) VALUES (%s, now(), %s, %s)",
                    [signed["position"], signed["keyId"], json.dumps(signed)],
                )
                container.chain.checkpoint()


def test_a_cut_tail_is_caught_by_the_process_that_verified_it_before(
    env: dict[str, str], pg_schema: str
) -> None:
    with running({**env, "AUDIT_SIGNING_KEY": ""}) as container:
        settled(container)
        assert api_verify(container)["ok"] is True
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            keep = positions(conn, pg_schema)[-4]
            cut_the_tail(conn, pg_schema, keep)
        for _ in range(2):  # and on every later call, incremental or full
            answer = api_verify(container)
            assert answer["ok"] is False and answer["checkpoint"] is None, answer
            assert keep < answer["firstBadPosition"], answer


def test_checkpoints_are_signed_on_a_schedule_and_verify_is_incremental(
    env: dict[str, str],
) -> None:
    with running({**env, "AUDIT_CHECKPOINT_SECONDS": "0.2"}) as container:
        last = settled(container)

        def signed() -> int | None:
            stored = container.chain.stored_checkpoints()
            return stored[-1]["position"] if stored and stored[-1]["position"] >= last else None

        position = wait_for(signed, 30, "a scheduled checkpoint")
        first = api_verify(container)
        assert first["ok"] is True and first["incremental"] is False, first
        assert first["checkpoint"]["position"] >= position, first
        assert first["logHead"] >= first["chainedThrough"] and first["lag"] >= 0, first
        second = api_verify(container)  # only what was chained since the first is walked
        assert second["ok"] is True and second["incremental"] is True, second
        assert second["checked"] >= first["checked"], second
