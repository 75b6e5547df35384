"""The service's own database role: it may append to the event log, never change it.

Revision ID: 0005
Revises: 0004
Create Date: 2024-12-04

PostgreSQL only, and only when ``DATABASE_APP_ROLE`` names the role (``courier
migrate`` passes it as the ``courier.app_role`` option); otherwise a no-op. Run it as
the schema's owner. It

* makes the role (NOLOGIN; give it to the login the service uses),
* creates the event store's table, type and index if eventsourcing has not yet
  (the same statements eventsourcing 9.5 uses), so the service can run with
  ``CREATE_TABLE=n``,
* grants the role SELECT and INSERT on the event table, and UPDATE only because
  eventsourcing takes ``LOCK TABLE … IN EXCLUSIVE MODE`` on every insert, which
  PostgreSQL allows only to holders of UPDATE, DELETE or TRUNCATE; a trigger then
  refuses every UPDATE, DELETE and TRUNCATE of stored events, whoever asks,
* lets it read and write the read side, but only append to the audit chain,
* and grants the same on tables later migrations create.

See docs/SECURITY.md, "Audit and tamper evidence".
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = "messaging_events"
APPEND_ONLY = ("audit_chain", "audit_checkpoints")
GUARD = "courier_events_append_only"


def _role() -> tuple[str, str, str] | None:
    """(quoted role, quoted schema, role as a SQL literal), or None when not asked for."""
    role = context.config.get_main_option("courier.app_role")
    bind = op.get_bind()
    if not role or bind.dialect.name != "postgresql":
        return None
    schema = str(bind.execute(sa.text("SELECT current_schema()")).scalar_one())
    quote = bind.dialect.identifier_preparer.quote_identifier
    literal = "'" + role.replace("'", "''") + "'"
    return quote(role), quote(schema), literal


def upgrade() -> None:
    found = _role()
    if found is None:
        return
    role, schema, literal = found
    events = f"{schema}.{EVENTS}"
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) "
        f"THEN CREATE ROLE {role} NOLOGIN; END IF; END $$"
    )
    op.execute(
        "DO $$ BEGIN "
        f"CREATE TYPE {schema}.stored_event_uuid AS (originator_id uuid, "
        "originator_version bigint, topic text, state bytea); "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {events} ("
        "originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text, "
        "state bytea, notification_id bigserial, "
        "PRIMARY KEY (originator_id, originator_version)) WITH ("
        "autovacuum_enabled = true, autovacuum_vacuum_threshold = 100000000, "
        "autovacuum_vacuum_scale_factor = 0.5, autovacuum_analyze_threshold = 1000, "
        "autovacuum_analyze_scale_factor = 0.01)"
    )
    op.execute(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {EVENTS}_notification_id_idx "
        f"ON {events} (notification_id ASC)"
    )
    op.execute(
        f"CREATE OR REPLACE FUNCTION {schema}.{GUARD}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'the event log is append-only: % refused', TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$"
    )
    op.execute(f"DROP TRIGGER IF EXISTS {GUARD}_rows ON {events}")
    op.execute(
        f"CREATE TRIGGER {GUARD}_rows BEFORE UPDATE OR DELETE ON {events} "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.{GUARD}()"
    )
    op.execute(f"DROP TRIGGER IF EXISTS {GUARD}_truncate ON {events}")
    op.execute(
        f"CREATE TRIGGER {GUARD}_truncate BEFORE TRUNCATE ON {events} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}.{GUARD}()"
    )

    op.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    op.execute(f"REVOKE ALL ON {events} FROM {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {events} TO {role}")
    for table in APPEND_ONLY:
        op.execute(f"REVOKE UPDATE, DELETE ON {schema}.{table} FROM {role}")
    op.execute(f"REVOKE INSERT, UPDATE, DELETE ON {schema}.alembic_version FROM {role}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}"
    )


def downgrade() -> None:
    found = _role()
    if found is None:
        return
    role, schema, _literal = found
    events = f"{schema}.{EVENTS}"
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
        f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {role}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE USAGE, SELECT ON SEQUENCES FROM {role}"
    )
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA {schema} FROM {role}")
    op.execute(f"DROP TRIGGER IF EXISTS {GUARD}_rows ON {events}")
    op.execute(f"DROP TRIGGER IF EXISTS {GUARD}_truncate ON {events}")
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.{GUARD}()")
