"""Where each follower of the log is: one row per follower (projection, relay), written
in the transaction of its work."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()

followers = Table(
    "followers",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)


def read_position(conn: Connection, name: str, *, lock: bool = False) -> int:
    query = select(followers.c.position).where(followers.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    value = conn.execute(query).scalar()
    return int(value) if value is not None else 0


def write_position(conn: Connection, name: str, position: int) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(followers).values(name=name, position=position)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"position": position}))
