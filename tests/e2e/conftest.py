"""Runtimes for end-to-end tests: embedded (SQLite, memory://) and services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_DSN, services_required
from tests.e2e.browser import Browser, launched
from tests.e2e.harness import Runtime
from tests.e2e.private import PrivatePostgres, PrivateRabbit, PrivateRedis, available

FAST = {
    "COURIER_POLL_INTERVAL": "0.02",
    "RECONCILE_AFTER_SECONDS": "5",
    "BROKER_VISIBILITY_TIMEOUT": "10",
}


def services_env(schema: str, redis_url: str) -> dict[str, str]:
    from infrastructure.crypto import generate_master_key_spec

    return {
        **FAST,
        "DATABASE_URL": PG_DSN,
        "POSTGRES_SCHEMA": schema,
        "BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
    }


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime("embedded", {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var")}, tmp_path)
    runtime.start()
    yield runtime
    runtime.stop()


@pytest.fixture
def services(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[Runtime]:
    runtime = Runtime("services", services_env(pg_schema, redis_url), tmp_path)
    runtime.start()
    yield runtime
    runtime.stop()


@pytest.fixture(params=["embedded", "services"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """One scenario body, run on each runtime."""
    value: Runtime = request.getfixturevalue(request.param)
    return value


def _private_servers() -> None:
    missing = available()
    if missing:
        if services_required():
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own, which it may stop and start (private.py)."""
    _private_servers()
    server = PrivatePostgres().start()
    yield server
    server.destroy()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis server of the test's own, which it may kill and start (private.py)."""
    _private_servers()
    server = PrivateRedis().start()
    yield server
    server.destroy()


@pytest.fixture
def private_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of the test's own, which it may kill and start (private.py)."""
    _private_servers()
    server = PrivateRabbit().start()
    yield server
    server.destroy()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Runtime]]:
    """Start services runtimes with the given env; every one is stopped at teardown."""
    runtimes: list[Runtime] = []

    def factory(env: dict[str, str]) -> Runtime:
        runtime = Runtime("services", env, tmp_path)
        runtimes.append(runtime)
        return runtime.start()

    yield factory
    for runtime in runtimes:
        runtime.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless (skips without it; fails under COURIER_REQUIRE_SERVICES=1)."""
    with launched() as chromium:
        yield chromium
