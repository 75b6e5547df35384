"""The stores a process opens: the SQLAlchemy engine (read models and the write side's
tables), their migrations (one process at a time on PostgreSQL), and the event store
under the ``Messaging`` application."""

from __future__ import annotations

import logging
import time
from typing import Any

from eventsourcing import persistence
from sqlalchemy import Engine, create_engine, event, text

from application.messaging import Messaging
from application.ports import Crypto
from infrastructure import eventstore
from infrastructure.runtime.relay import lock_key
from infrastructure.settings import Settings, eventstore_env

log = logging.getLogger("courier")


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url()
    if settings.is_postgres:
        schema = settings.postgres_schema
        # A writer waiting on a stuck lock holder, or a transaction left open by a paused
        # process, is cut off within seconds instead of freezing every writer behind it.
        # The URL's other query parameters (sslmode, …) reach psycopg through the URL.
        options = [
            settings.database_params().get("options", ""),
            f"-c lock_timeout={settings.lock_timeout}s",
            f"-c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout}s",
            f"-csearch_path={schema}" if schema else "",
        ]
        return create_engine(
            url,
            pool_size=3,
            max_overflow=7,
            pool_pre_ping=True,
            pool_timeout=10,
            connect_args={"connect_timeout": 5, "options": " ".join(o for o in options if o)},
        )
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows (a shredded message's wrapped keys) are overwritten, not left in
        # free pages of the file.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return engine


def migrate(settings: Settings, engine: Engine) -> None:
    """Apply pending read-side migrations (one process at a time on Postgres)."""
    from infrastructure import migrate as migrations

    schema = settings.postgres_schema
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            # Processes started together wait here for the one that migrates, however long
            # it takes: this wait is neither stuck nor idle, unlike what the timeouts cut.
            conn.execute(text("SET lock_timeout = 0"))
            conn.execute(text("SET idle_in_transaction_session_timeout = 0"))
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("migrate", schema)})
            conn.commit()  # the lock is the session's; no transaction is left open
            try:
                migrations.upgrade(
                    settings.sqlalchemy_url(),
                    schema=schema,
                    app_role=settings.database_app_role,
                )
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("migrate", schema)}
                )
                conn.execute(text("RESET lock_timeout"))
                conn.execute(text("RESET idle_in_transaction_session_timeout"))
                conn.commit()
    else:
        migrations.upgrade(settings.sqlalchemy_url())


def open_messaging(crypto: Crypto, settings: Settings, attempts: int = 5) -> Messaging:
    """The application on its event store, made when missing.

    Processes started together (API, relay, worker, projections) all ask PostgreSQL to
    create the event tables; ``CREATE TABLE IF NOT EXISTS`` run at the same moment can
    fail in the catalog for all but one of them. The tables then exist: ask again.
    """
    env = eventstore_env(settings)
    if settings.is_postgres:
        env.setdefault("APPLICATION_RECORDER_TOPIC", eventstore.TOPIC)
    for attempt in range(1, attempts + 1):
        try:
            return Messaging(crypto=crypto, env=env)
        except (
            persistence.IntegrityError,  # duplicate key in pg_type
            persistence.InternalError,  # tuple concurrently updated
            persistence.ProgrammingError,  # relation already exists
        ) as error:
            if attempt == attempts:
                raise
            log.info("event store tables were being created elsewhere (%s); again", error)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")
