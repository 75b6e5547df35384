"""Integration fixtures: the machine's PostgreSQL as a SQLAlchemy URL."""

from __future__ import annotations

import pytest

from tests.conftest import unavailable


@pytest.fixture(scope="session")
def pg_url(pg_dsn: str) -> str:
    """``postgresql+psycopg://`` URL of a PostgreSQL that accepts connections.

    Skips when it is unreachable, fails instead when ``COURIER_REQUIRE_SERVICES=1``.
    """
    import psycopg

    try:
        with psycopg.connect(pg_dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL at {pg_dsn} ({type(exc).__name__})")
    return "postgresql+psycopg://" + pg_dsn.split("://", 1)[1]
