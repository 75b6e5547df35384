"""The read side's Alembic migrations, on every backend Courier supports."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, func, inspect, pool, select, text
from sqlalchemy.dialects.postgresql import JSONB

from infrastructure import migrate
from infrastructure.crypto import generate_master_key_spec
from infrastructure.tables import key_vault
from interfaces.cli import main
from migrations.schema import metadata
from projections.search import FTS_TABLE
from tests.conftest import PG_DSN

NAMED_INDEXES = {"messages_is_encrypted_idx", "messages_conversation_encrypted_idx"}


@dataclass(frozen=True)
class Database:
    url: str
    schema: str | None = None

    def engine(self) -> Engine:
        args = {"options": f"-csearch_path={self.schema}"} if self.schema else {}
        return create_engine(self.url, poolclass=pool.NullPool, connect_args=args)


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[Database]:
    """A fresh schema name, not created here (env.py must), dropped with CASCADE after."""
    db = Database(pg_url, "t_migr_" + uuid.uuid4().hex[:12])
    yield db
    engine = create_engine(pg_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'courier.read.db'}")
    db: Database = request.getfixturevalue("pg_database")
    return db


def head() -> str:
    heads = ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1
    return heads[0]


def read_tables(db: Database) -> set[str]:
    engine = db.engine()
    try:
        return set(inspect(engine).get_table_names(schema=db.schema)) - {"alembic_version"}
    finally:
        engine.dispose()


def is_fts(name: str | None) -> bool:
    """SQLite's FTS5 search table and its shadow tables: made by migration 0004 alone,
    since a virtual table has no place in the metadata; left out of the comparison."""
    return (name or "").startswith(FTS_TABLE)


def fts_tables(db: Database) -> set[str]:
    return {name for name in read_tables(db) if is_fts(name)}


def assert_matches_tables_py(db: Database) -> None:
    """Every table, column type and index of migrations/schema.py, nothing else."""
    engine = db.engine()
    try:
        inspector = inspect(engine)
        assert read_tables(db) - fts_tables(db) == set(metadata.tables)
        if engine.dialect.name == "sqlite":
            assert FTS_TABLE in fts_tables(db)
        else:
            assert fts_tables(db) == set()
        for table in metadata.tables.values():
            indexes = {ix["name"] for ix in inspector.get_indexes(table.name, schema=db.schema)}
            assert indexes == {ix.name for ix in table.indexes}, table.name
        on_messages = {ix["name"] for ix in inspector.get_indexes("messages", schema=db.schema)}
        assert on_messages.issuperset(NAMED_INDEXES)
        with engine.connect() as conn:
            if db.schema:
                conn.dialect.default_schema_name = db.schema
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_name": lambda name, type_, _parents: (
                        not (type_ == "table" and is_fts(name))
                    ),
                },
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database: Database, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    logging_before = (root.level, list(root.handlers), logging.getLogger("alembic").handlers[:])

    assert migrate.current(database.url, schema=database.schema) is None
    assert migrate.pending(database.url, schema=database.schema)

    migrate.upgrade(database.url, schema=database.schema)
    migrate.upgrade(database.url, schema=database.schema)  # already there: a no-op

    assert_matches_tables_py(database)
    assert migrate.current(database.url, schema=database.schema) == head()
    assert not migrate.pending(database.url, schema=database.schema)

    migrate.downgrade(database.url, "base", schema=database.schema, destroy_keys=True)
    assert read_tables(database) == set()
    assert migrate.current(database.url, schema=database.schema) is None
    assert migrate.pending(database.url, schema=database.schema)

    migrate.upgrade(database.url, schema=database.schema)
    assert_matches_tables_py(database)
    assert migrate.current(database.url, schema=database.schema) == head()

    assert capsys.readouterr().out == ""
    after = (root.level, list(root.handlers), logging.getLogger("alembic").handlers[:])
    assert after == logging_before


@pytest.mark.services
def test_postgres_tables_live_in_the_schema(pg_database: Database) -> None:
    database = pg_database
    assert database.schema is not None
    migrate.upgrade(database.url, schema=database.schema)
    engine = create_engine(database.url, poolclass=pool.NullPool)  # default search_path
    try:
        inspector = inspect(engine)
        in_schema = set(inspector.get_table_names(schema=database.schema))
        assert in_schema == set(metadata.tables) | {"alembic_version"}
        columns = {c["name"]: c for c in inspector.get_columns("messages", database.schema)}
        assert isinstance(columns["encryption_metadata"]["type"], JSONB)
        assert isinstance(columns["recipient_ids"]["type"], JSONB)
    finally:
        engine.dispose()
    # Another schema on the same database is untouched by this one's revision.
    assert migrate.current(database.url, schema=database.schema + "_other") is None


def test_config_keeps_percent_encoded_url() -> None:
    url = "postgresql+psycopg://user:p%40ss%25@127.0.0.1:5432/test"
    config = migrate.alembic_config(url, schema="s1")
    assert config.get_main_option("sqlalchemy.url") == url
    assert config.get_main_option(migrate.SCHEMA_OPTION) == "s1"
    assert Path(config.get_main_option("script_location") or "").joinpath("env.py").is_file()
    assert (
        migrate.alembic_config("sqlite:///x.db", schema="s1").get_main_option(migrate.SCHEMA_OPTION)
        is None
    )


def test_a_process_waits_for_another_that_migrates_longer_than_the_lock_timeout(
    pg_dsn: str, pg_schema: str
) -> None:
    import threading
    import time

    import psycopg

    from infrastructure.crypto import generate_master_key_spec
    from infrastructure.runtime.relay import lock_key
    from infrastructure.runtime.stores import make_engine
    from infrastructure.runtime.stores import migrate as migrate_under_lock
    from infrastructure.settings import load

    settings = load(
        {
            "DATABASE_URL": pg_dsn,
            "POSTGRES_SCHEMA": pg_schema,
            "POSTGRES_LOCK_TIMEOUT": "1",
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        }
    )
    engine = make_engine(settings)
    done = threading.Event()
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as other:
            # Another process migrating: it holds the lock for longer than lock_timeout.
            other.execute("SELECT pg_advisory_lock(%s)", [lock_key("migrate", pg_schema)])
            started = time.monotonic()
            waiting = threading.Thread(
                target=lambda: (migrate_under_lock(settings, engine), done.set())
            )
            waiting.start()
            assert not done.wait(2.5)  # still waiting, past the 1 s lock timeout
            other.execute("SELECT pg_advisory_unlock(%s)", [lock_key("migrate", pg_schema)])
            waiting.join(60)
        assert done.is_set() and time.monotonic() - started >= 2.5
        assert "messages" in inspect(engine).get_table_names(schema=pg_schema)
    finally:
        engine.dispose()


def cli_env(db: Database) -> dict[str, str]:
    """The settings of a `courier` process whose read side is ``db``."""
    if db.schema is None:
        events = db.url.removeprefix("sqlite:///").removesuffix(".read.db") + ".db"
        return {"DATABASE_URL": f"sqlite:///{events}"}
    return {
        "DATABASE_URL": PG_DSN,
        "POSTGRES_SCHEMA": db.schema,
        "JWT_SECRET": "migrations-" + "x" * 40,
        "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
    }


def keys_held(db: Database) -> int:
    engine = db.engine()
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(key_vault)).scalar_one())
    finally:
        engine.dispose()


def test_a_downgrade_that_drops_the_key_vault_needs_destroy_keys(database: Database) -> None:
    migrate.upgrade(database.url, schema=database.schema)
    engine = database.engine()
    with engine.begin() as conn:
        conn.execute(
            key_vault.insert().values(
                message_id=str(uuid.uuid4()),
                holder_type="service",
                holder="service:d1",
                key_id="k1",
                wrapped_key=b"wrapped",
                created_at=datetime.now(UTC),
            )
        )
    engine.dispose()
    env = cli_env(database)

    def courier(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["migrate", "down", *args], env=env)
        return result.exit_code, result.output

    for target in ("base", f"-{int(head())}"):  # every revision, down to base
        code, output = courier(target)
        assert code == 1, output
        assert "key_vault" in output and "--destroy-keys" in output, output
        assert "content key would be destroyed" in output
        assert migrate.current(database.url, schema=database.schema) == head()
        assert keys_held(database) == 1
    with pytest.raises(migrate.KeysWouldBeDestroyed):
        migrate.downgrade(database.url, "base", schema=database.schema)

    # Down to the revision that made the vault: the vault stays, no flag needed.
    code, output = courier("0001")
    assert code == 0, output
    assert migrate.current(database.url, schema=database.schema) == "0001"
    assert keys_held(database) == 1
    code, output = courier("-1")
    assert code == 1 and "reverts revision 0001" in output, output
    code, output = courier("nonsense")
    assert code == 1 and "nonsense" in output and "Traceback" not in output, output

    code, output = courier("base", "--destroy-keys")
    assert code == 0, output
    assert read_tables(database) == set()
    assert migrate.current(database.url, schema=database.schema) is None


def test_vault_rows_get_the_holder_type_their_prefix_names(database: Database) -> None:
    migrate.upgrade(database.url, "0008", schema=database.schema)
    mid, now = str(uuid.uuid4()), datetime.now(UTC)
    engine = database.engine()
    holders = ["service:d1", "digest:r1", "search:r1", "search:", "bob", "servicemen"]
    try:
        with engine.begin() as conn:
            for holder in holders:
                conn.execute(
                    text(
                        "INSERT INTO key_vault (message_id, holder, key_id, wrapped_key, "
                        "created_at) VALUES (:m, :h, 'k1', :w, :t)"
                    ),
                    {"m": mid, "h": holder, "w": b"w", "t": now},
                )
        migrate.upgrade(database.url, schema=database.schema)
        with engine.connect() as conn:
            rows = conn.execute(select(key_vault.c.holder, key_vault.c.holder_type)).all()
        assert dict(rows) == {
            "service:d1": "service",
            "digest:r1": "digest",
            "search:r1": "search",
            "search:": "search",
            "bob": "user",
            "servicemen": "user",
        }
        # A user row beside the service's row of the same holder: the type keeps them apart.
        with engine.begin() as conn:
            conn.execute(
                key_vault.insert().values(
                    message_id=mid,
                    holder_type="user",
                    holder="service:d1",
                    key_id="k_u",
                    wrapped_key=b"u",
                    created_at=now,
                )
            )
        migrate.downgrade(database.url, "0008", schema=database.schema)
        with engine.connect() as conn:
            after = [tuple(r) for r in conn.execute(text("SELECT holder, key_id FROM key_vault"))]
        # Going back, the user's row that the old key cannot tell apart is the one dropped.
        assert sorted(after) == sorted((h, "k1") for h in holders)
    finally:
        engine.dispose()
