"""Many rows at once, in one statement of fixed text, inside the caller's transaction.

``conn.execute(table.insert(), rows)`` runs the INSERT once per row (or builds a new
statement for each number of rows). On PostgreSQL, plain appends go through COPY;
upserts pass their rows as one JSON document and reads by key one array, so that
the statement is the same whatever the number of rows and is prepared once per
connection. Other databases (SQLite) take the ordinary path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import orjson
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, Table, select, update
from sqlalchemy.dialects import sqlite


def dumps(value: Any) -> bytes:
    """JSON for a JSONB value: orjson, or the standard library for what orjson refuses
    (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=_isoformat).encode()


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def append_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys) into ``table``."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    names = list(rows[0])
    as_json = _json_columns(table)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        qualified(conn, table), sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    with driver(conn).cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([Jsonb(row[n], dumps) if n in as_json else row[n] for n in names])


def upsert_rows(
    conn: Connection, table: Table, keys: Sequence[str], rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows`` (each with every column of ``table``), replacing those whose
    ``keys`` are taken; with no ``keys``, leaving out those that conflict."""
    if not rows:
        return
    names = [c.name for c in table.columns]
    if conn.dialect.name != "postgresql":
        stmt = sqlite.insert(table)
        if keys:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={n: stmt.excluded[n] for n in names if n not in keys},
            )
        else:
            stmt = stmt.on_conflict_do_nothing()
        conn.execute(stmt, list(rows))
        return
    # The rows travel as one JSON document (orjson), which PostgreSQL turns back into
    # rows of the table's type: far cheaper here than one array parameter per column.
    with driver(conn).cursor() as cursor:
        cursor.execute(_upsert_sql(_schema(conn, table), table, tuple(keys)), [Jsonb(rows, dumps)])


def rows_where_in(
    conn: Connection, table: Table, column: str, values: Iterable[Any]
) -> list[dict[str, Any]]:
    """Every row of ``table`` whose ``column`` is one of ``values``."""
    wanted = list(values)
    if not wanted:
        return []
    if conn.dialect.name != "postgresql":
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 500):
            query = select(table).where(table.c[column].in_(wanted[start : start + 500]))
            found.extend(dict(row) for row in conn.execute(query).mappings())
        return found
    statement = sql.SQL("SELECT * FROM {} WHERE {} = ANY(%s)").format(
        qualified(conn, table), sql.Identifier(column)
    )
    with driver(conn).cursor(row_factory=dict_row) as cursor:
        rows: list[dict[str, Any]] = cursor.execute(statement, [wanted]).fetchall()
    return rows


def set_where_in(
    conn: Connection, table: Table, values: dict[str, Any], column: str, keys: Sequence[Any]
) -> None:
    """``UPDATE table SET values WHERE column IN keys``, in one statement of fixed text."""
    if not keys:
        return
    if conn.dialect.name != "postgresql":
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            conn.execute(update(table).where(table.c[column].in_(chunk)).values(**values))
        return
    statement = sql.SQL("UPDATE {} SET {} WHERE {} = ANY(%s)").format(
        qualified(conn, table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in values),
        sql.Identifier(column),
    )
    with driver(conn).cursor() as cursor:
        cursor.execute(statement, [*values.values(), list(keys)])


def driver(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` (in the same transaction)."""
    return conn.connection.driver_connection


def _schema(conn: Connection, table: Table) -> str | None:
    # A replay writes through a schema translation into its shadow schema: honour it.
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema: str | None = translate.get(table.schema, table.schema)
    return schema


def qualified(conn: Connection, table: Table) -> sql.Identifier:
    """The table's name as ``conn`` writes it (a replay: in its shadow schema)."""
    return _identifier(_schema(conn, table), table)


def _identifier(schema: str | None, table: Table) -> sql.Identifier:
    return sql.Identifier(schema, table.name) if schema else sql.Identifier(table.name)


@cache
def _json_columns(table: Table) -> frozenset[str]:
    return frozenset(c.name for c in table.columns if isinstance(c.type, JSON))


@cache
def _upsert_sql(schema: str | None, table: Table, keys: tuple[str, ...]) -> sql.Composed:
    names = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
    keys_ = set(keys)
    conflict: sql.Composable = sql.SQL("DO NOTHING")
    if keys:
        conflict = sql.SQL("({}) DO UPDATE SET {}").format(
            sql.SQL(", ").join(sql.Identifier(k) for k in keys),
            sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c.name))
                for c in table.columns
                if c.name not in keys_
            ),
        )
    target = _identifier(schema, table)
    return sql.SQL(
        "INSERT INTO {} ({}) SELECT {} FROM jsonb_populate_recordset(NULL::{}, %s) ON CONFLICT {}"
    ).format(target, names, names, target, conflict)
