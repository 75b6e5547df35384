"""Runtimes for end-to-end tests: embedded (SQLite, memory://) and services."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_DSN
from tests.e2e.browser import Browser, launched
from tests.e2e.harness import Runtime

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


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless (skips without it; fails under COURIER_REQUIRE_SERVICES=1)."""
    with launched() as chromium:
        yield chromium
