"""Migration 0005: the service runs as a role that can append events but never change them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from application.outgoing import Outgoing
from domain.events import Context
from infrastructure import migrate
from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.settings import load
from tests.conftest import PG_DSN
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.services


@pytest.fixture
def roles(pg_schema: str) -> Iterator[tuple[str, str]]:
    """(the application role the migration makes, a login that is a member of it)."""
    suffix = uuid.uuid4().hex[:10]
    app, login = f"courier_app_{suffix}", f"courier_login_{suffix}"
    yield app, login
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for role in (login, app):
            conn.execute(f"DROP OWNED BY {role} CASCADE")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_the_service_role_appends_events_but_cannot_change_them(
    pg_schema: str, roles: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app_role, login = roles
    url = "postgresql+psycopg://" + PG_DSN.split("://", 1)[1]
    migrate.upgrade(url, schema=pg_schema, app_role=app_role)  # as the owner
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE {app_role}")

    # The service connects as the login, and creates no tables of its own.
    monkeypatch.setenv("CREATE_TABLE", "n")
    env = {
        "DATABASE_URL": PG_DSN.replace("root@", f"{login}@"),
        "POSTGRES_SCHEMA": pg_schema,
        "DATABASE_APP_ROLE": app_role,
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "COURIER_POLL_INTERVAL": "0.02",
    }
    container = build(load(env), ALL)
    container.start()
    try:
        sent = container.messaging.send_direct(
            Context("alice", "t1"), "bob", Outgoing(content="hi")
        )
        wait_for(
            lambda: container.messaging.get_message("t1", sent.message.id).is_delivered,
            30,
            "delivery under the application role",
        )
        last = container.event_log.last_position()
        wait_for(lambda: container.chain.chained_through() >= last, 30, "the chain")
        assert container.chain.verify().ok
    finally:
        container.stop()

    table = f"{pg_schema}.messaging_events"
    refused = [
        f"UPDATE {table} SET topic = topic",
        f"DELETE FROM {table}",
        f"TRUNCATE {table}",
        f"UPDATE {pg_schema}.audit_chain SET hash = hash",
        f"DELETE FROM {pg_schema}.audit_chain",
        f"DROP TABLE {table}",
    ]
    login_dsn = PG_DSN.replace("root@", f"{login}@")
    for statement in refused:
        with (
            psycopg.connect(login_dsn, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)
    with psycopg.connect(login_dsn, autocommit=True) as conn:
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert count is not None and count[0] >= 4
    # Even the owner cannot rewrite history without first disabling the guard.
    with (
        psycopg.connect(PG_DSN, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"UPDATE {table} SET topic = topic")
