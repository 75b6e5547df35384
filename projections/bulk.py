"""Many new rows at once: PostgreSQL's COPY instead of one INSERT per row.

``conn.execute(table.insert(), rows)`` runs the INSERT once per row. For plain
appends (no conflict handling) COPY does the same work several times faster, inside
the caller's transaction. Other databases (SQLite) take the ordinary path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, Table


def dumps(value: Any) -> bytes:
    """JSON for a JSONB column: orjson, or the standard library for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()


def append_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
    # A replay writes through a schema translation into its shadow schema: honour it.
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    target = sql.Identifier(schema, table.name) if schema else sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([Jsonb(row[n], dumps) if n in as_json else row[n] for n in names])
