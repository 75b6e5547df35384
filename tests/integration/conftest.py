"""Integration fixtures: the machine's PostgreSQL as a SQLAlchemy URL, and an engine on
either database with the whole schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, pool

from migrations.schema import metadata
from tests.conftest import PG_DSN, unavailable


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def both_engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine with every table, on SQLite, then on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'read.db'}", poolclass=pool.NullPool)
    else:
        schema = request.getfixturevalue("pg_schema")
        url = "postgresql+psycopg://" + PG_DSN.split("://", 1)[1]
        args = {"options": f"-csearch_path={schema}"}
        engine = create_engine(url, poolclass=pool.NullPool, connect_args=args)
    metadata.create_all(engine)
    yield engine
    engine.dispose()
