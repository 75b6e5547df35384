"""What ``/metrics`` reports of the other processes, read from state every API process
can see: each follower's position (the ``followers`` table that the projections and
the relay write in the transaction of their work) against the log's head, and whether
some relay holds the leader lock (PostgreSQL's ``pg_locks``)."""

from __future__ import annotations

from sqlalchemy import Engine, select, text

from infrastructure.storage.positions import followers

# A relay's advisory lock as pg_locks shows it: a bigint key in one lock of this database.
HELD = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid::bigint = :high AND objid::bigint = :low AND objsubid = 1"
)


def follower_positions(engine: Engine) -> dict[str, int]:
    """Every follower's stored position, by name (projections and ``relay``)."""
    with engine.connect() as conn:
        return {
            str(name): int(position)
            for name, position in conn.execute(select(followers.c.name, followers.c.position))
        }


def leader_held(engine: Engine, key: int) -> bool:
    """Whether some session holds the advisory lock ``key`` (PostgreSQL only)."""
    with engine.connect() as conn:
        count = conn.execute(HELD, {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF})
        return bool(count.scalar())
