"""Apply the read side's Alembic migrations from code (no alembic.ini, no CLI needed).

The scripts live in the ``migrations`` package, so this works from an installed
wheel as well as from the repository. The event store's own tables are created by
eventsourcing, not here. With ``schema`` (PostgreSQL only; ignored elsewhere, as
eventsourcing ignores ``POSTGRES_SCHEMA``), the tables and ``alembic_version`` live
in that schema, which is created if missing.
"""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url, pool

import migrations

SCHEMA_OPTION = "courier.schema"  # read by migrations/env.py
APP_ROLE_OPTION = "courier.app_role"  # read by migration 0005 (DATABASE_APP_ROLE)


def _script_location() -> str:
    # __path__ rather than __file__: an editable install made before migrations/ had an
    # __init__.py imports it as a namespace package, which has no __file__.
    for entry in migrations.__path__:
        if Path(entry, "env.py").is_file():
            return str(entry)
    raise RuntimeError(f"no env.py in the migrations package ({list(migrations.__path__)})")


def _schema(sqlalchemy_url: str, schema: str | None) -> str | None:
    if not schema or make_url(sqlalchemy_url).get_backend_name() != "postgresql":
        return None
    return schema


def alembic_config(
    sqlalchemy_url: str, schema: str | None = None, app_role: str | None = None
) -> Config:
    """An Alembic config for the read side of the database at ``sqlalchemy_url``.

    Alembic's own messages go to a discarded buffer; logging is left as the process set it.
    """
    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", _script_location())
    config.set_main_option("path_separator", "os")
    # Config values are %-interpolated: a percent-encoded password must survive that.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url.replace("%", "%%"))
    schema = _schema(sqlalchemy_url, schema)
    if schema:
        config.set_main_option(SCHEMA_OPTION, schema.replace("%", "%%"))
    if app_role:
        config.set_main_option(APP_ROLE_OPTION, app_role.replace("%", "%%"))
    return config


def upgrade(
    sqlalchemy_url: str,
    revision: str = "head",
    schema: str | None = None,
    app_role: str | None = None,
) -> None:
    """Migrate the read side up to ``revision``; a no-op when it is already there.

    ``app_role`` (PostgreSQL): the database role the service runs as, which migration
    0005 makes and allows to append to the event log but never to change it.
    """
    command.upgrade(alembic_config(sqlalchemy_url, schema, app_role), revision)


# The revisions that create a table of keys, which reverting them drops with every key.
KEY_TABLES = {"0001": "key_vault"}


class KeysWouldBeDestroyed(RuntimeError):
    """A downgrade would drop the key vault: refused unless the caller says to go ahead."""


def reverted(sqlalchemy_url: str, revision: str, schema: str | None = None) -> list[str]:
    """The revisions a downgrade to ``revision`` would revert, newest first (as
    ``alembic downgrade`` resolves them: ``base``, ``-N``, an id)."""
    current_ = current(sqlalchemy_url, schema)
    if current_ is None:
        return []
    script = ScriptDirectory.from_config(alembic_config(sqlalchemy_url, schema))
    return [step.revision.revision for step in script._downgrade_revs(revision, current_)]


def downgrade(
    sqlalchemy_url: str,
    revision: str,
    schema: str | None = None,
    app_role: str | None = None,
    *,
    destroy_keys: bool = False,
) -> None:
    """Migrate the read side down to ``revision`` (``"base"`` drops every read table).

    Reverting a revision that creates ``key_vault`` drops every message's wrapped
    content key: no sealed message could be opened again, in any backup of the event
    log either. Refused (``KeysWouldBeDestroyed``) unless ``destroy_keys``.
    """
    if not destroy_keys:
        lost = [r for r in reverted(sqlalchemy_url, revision, schema) if r in KEY_TABLES]
        if lost:
            tables = ", ".join(KEY_TABLES[r] for r in lost)
            raise KeysWouldBeDestroyed(
                f"downgrading to {revision} reverts revision {', '.join(lost)}, which drops "
                f"{tables}: every message's content key would be destroyed and no sealed "
                "message could be opened again (as if every message were shredded). "
                "Back up the read database first; to go ahead, add --destroy-keys"
            )
    command.downgrade(alembic_config(sqlalchemy_url, schema, app_role), revision)


def _current_heads(sqlalchemy_url: str, schema: str | None) -> tuple[str, ...]:
    engine = create_engine(sqlalchemy_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table_schema": _schema(sqlalchemy_url, schema)}
            )
            return context.get_current_heads()
    finally:
        engine.dispose()


def current(sqlalchemy_url: str, schema: str | None = None) -> str | None:
    """The read side's revision, or None when it has never been migrated."""
    heads = _current_heads(sqlalchemy_url, schema)
    if len(heads) > 1:
        raise RuntimeError(f"read side has several revisions: {', '.join(heads)}")
    return heads[0] if heads else None


def pending(sqlalchemy_url: str, schema: str | None = None) -> bool:
    """Whether the read side is behind (or beside) the newest migration."""
    script = ScriptDirectory.from_config(alembic_config(sqlalchemy_url, schema))
    return set(_current_heads(sqlalchemy_url, schema)) != set(script.get_heads())
