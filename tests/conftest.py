"""Shared fixtures: the machine's services, found or (in CI) required."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from infrastructure.settings import Settings

PG_DSN = os.environ.get("COURIER_TEST_PG", "postgresql://root@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("COURIER_TEST_REDIS", "redis://127.0.0.1:6379")
AMQP_URL = os.environ.get("COURIER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def services_required() -> bool:
    return os.environ.get("COURIER_REQUIRE_SERVICES") == "1"


def unavailable(what: str) -> None:
    """Skip on a developer machine without the service; fail where it is required."""
    message = f"{what} is not reachable"
    if services_required():
        pytest.fail(message + " (COURIER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    if not _port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL at 127.0.0.1:5432")
    return PG_DSN


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own for one test (flushed before and after)."""
    import redis

    if not _port_open("127.0.0.1", 6379):
        unavailable("Redis at 127.0.0.1:6379")
    url = f"{REDIS_BASE}/{os.environ.get('COURIER_TEST_REDIS_DB', '9')}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """RabbitMQ's default vhost, with Courier's queues purged before and after."""
    if not _port_open("127.0.0.1", 5672):
        unavailable("RabbitMQ at 127.0.0.1:5672")
    _purge_amqp(AMQP_URL)
    yield AMQP_URL
    _purge_amqp(AMQP_URL)


def _purge_amqp(url: str) -> None:
    from kombu import Connection

    from application.jobs import QUEUES
    from infrastructure.broker import lanes_of, queue_for

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.default_channel
        for name in (lane for queue in QUEUES for lane in lanes_of(queue)):
            queue = queue_for(name).bind(channel)
            queue.declare()
            queue.purge()


def backend_settings(
    request: pytest.FixtureRequest, data_dir: Path, extra: dict[str, str] | None = None
) -> Settings:
    """Settings of one process on ``request.param``: "sqlite" (files under ``data_dir``)
    or "postgres" (a fresh schema), with the test's ``extra`` keys."""
    from infrastructure.crypto import generate_master_key_spec
    from infrastructure.settings import load

    env = {
        "JWT_SECRET": "s" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        "COURIER_POLL_INTERVAL": "0.02",
        "COURIER_DATA_DIR": str(data_dir),
        **(extra or {}),
    }
    if request.param == "postgres":
        env.update(DATABASE_URL=PG_DSN, POSTGRES_SCHEMA=request.getfixturevalue("pg_schema"))
    return load(env)
