"""Alembic's environment for the read side, configured by ``infrastructure.migrate``.

Logging is left to the host process (no ``fileConfig``). When the main option
``courier.schema`` is set (PostgreSQL only), the schema is created if missing, the
migration connection's ``search_path`` points at it and ``alembic_version`` lives in it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from projections.tables import metadata

config = context.config
SCHEMA_OPTION = "courier.schema"


def _schema_for(connection: Connection) -> str | None:
    schema = config.get_main_option(SCHEMA_OPTION) or None
    if schema is None or connection.dialect.name != "postgresql":
        return None
    quoted = connection.dialect.identifier_preparer.quote_identifier(schema)
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
