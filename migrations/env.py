"""Alembic's environment for the read side, configured by ``infrastructure.migrate``.

Logging is left to the host process (no ``fileConfig``). When the main option
``courier.schema`` is set (PostgreSQL only), the schema is created if missing, the
migration connection's ``search_path`` points at it and ``alembic_version`` lives in it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from migrations.schema import metadata
from projections.search import FTS_TABLE

config = context.config
SCHEMA_OPTION = "courier.schema"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave SQLite's FTS5 search table and its shadow tables alone: migration 0004
    makes them, and a virtual table has no place in the metadata to compare with."""
    return not (type_ == "table" and (name or "").startswith(FTS_TABLE))


def _schema_for(connection: Connection) -> str | None:
    schema = config.get_main_option(SCHEMA_OPTION) or None
    if schema is None or connection.dialect.name != "postgresql":
        return None
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
    # Only when missing: the service's own database role may not create schemas.
    exists = text("SELECT 1 FROM pg_namespace WHERE nspname = :name")
    if connection.execute(exists, {"name": schema}).scalar() is None:
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
    connection.execute(text(f"SET search_path TO {quoted}"))
    connection.commit()
    # So that inspection and autogenerate treat the schema as the default one.
    connection.dialect.default_schema_name = schema
    return schema


def run_migrations_offline() -> None:
    """Emit SQL to the output buffer instead of running it (``alembic ... --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        include_name=include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table_schema=config.get_main_option(SCHEMA_OPTION) or None,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set; use infrastructure.migrate")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            schema = _schema_for(connection)
            context.configure(
                connection=connection,
                target_metadata=metadata,
                include_name=include_name,
                version_table_schema=schema,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
