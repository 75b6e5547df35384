"""The job pipeline in one process against real stores and brokers.

One scenario body runs on every backend pair it claims to support: SQLite with
memory://, PostgreSQL with Redis, PostgreSQL with RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from application.outgoing import Outgoing
from domain.events import Context
from domain.message import Message
from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.bootstrap import ALL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from tests.conftest import PG_DSN
from tests.e2e.harness import wait_for


def _container(env: dict[str, str]) -> Iterator[Container]:
    settings = load(
        {
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
            "COURIER_POLL_INTERVAL": "0.02",
            **env,
        }
    )
    container = build(settings, ALL)
    container.start()
    yield container
    container.stop()


@pytest.fixture(params=["sqlite-memory", "postgres-redis", "postgres-rabbitmq"])
def container(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Container]:
    if request.param == "sqlite-memory":
        yield from _container({"COURIER_DATA_DIR": str(tmp_path)})
        return
    schema = request.getfixturevalue("pg_schema")
    broker = request.getfixturevalue("redis_url" if "redis" in request.param else "amqp_url")
    env = {"DATABASE_URL": PG_DSN, "POSTGRES_SCHEMA": schema, "BROKER_URL": broker}
    yield from _container(env)


def _done(container: Container, tenant: str, mid: UUID) -> Message | None:
    message = container.messaging.get_message(tenant, mid)
    return message if message.is_delivered and message.is_notified and message.indexed else None


@pytest.mark.services
def test_group_message_goes_through_every_stage(container: Container) -> None:
    lead = Context(actor_id="lead", tenant_id="t1")
    people = [f"p{i}" for i in range(120)]
    conversation = container.messaging.start_conversation(lead, "group", people, "ward")
    sent = container.messaging.send_group(lead, conversation.id, Outgoing(content="hi all"))
    message = wait_for(lambda: _done(container, "t1", sent.message.id), 60, "the message to finish")
    assert sorted(message.delivered) == ["0", "1", "2"]
    assert [len(message.delivered[k]) for k in ("0", "1", "2")] == [50, 50, 20]
    assert sorted(message.notified_batches) == ["0", "1", "2"]

    def projected() -> dict[str, object] | None:
        items, _ = container.queries.conversation_messages("t1", "lead", conversation.id, 10, None)
        return (
            items[0]
            if items and items[0]["status"] == "delivered" and items[0]["notified"]
            else None
        )

    row = wait_for(projected, 30, "the read model to show it delivered")
    assert row["deliveredCount"] == 120 and row["indexed"] is True


@pytest.mark.services
def test_direct_messages_all_complete_once(container: Container) -> None:
    alice = Context(actor_id="alice", tenant_id="t1")
    ids = [
        container.messaging.send_direct(alice, "bob", Outgoing(content=f"n{i}")).message.id
        for i in range(50)
    ]
    for mid in ids:
        wait_for(lambda mid=mid: _done(container, "t1", mid), 60, f"message {mid}")
    for mid in ids:
        events = list(container.messaging.events.get(mid))
        kinds = [type(e).__name__ for e in events]
        assert kinds.count("Delivered") == 1 and kinds.count("Notified") == 1, kinds
        assert kinds.count("Indexed") == 1, kinds
