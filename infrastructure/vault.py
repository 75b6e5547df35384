"""The key vault: wrapped data keys in a table outside the event log, and what else must
go with them when a message is shredded (application/ports.py, ``VaultEntry``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg import sql
from sqlalchemy import Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from application.ports import HolderType, VaultEntry, WrapFormat, holds_key
from infrastructure.groupcommit import GroupCommitter
from infrastructure.pgarrays import hex_bytes, quoted
from infrastructure.storage.bulk import driver, qualified
from infrastructure.tables import key_vault

UPSERT_ARRAYS = sql.SQL(
    "INSERT INTO {} (message_id, holder_type, holder, key_id, wrapped_key, created_at) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::bytea[], "
    "%s::timestamptz[]) "
    "ON CONFLICT (message_id, holder_type, holder) DO UPDATE "
    "SET key_id = EXCLUDED.key_id, wrapped_key = EXCLUDED.wrapped_key"
)


def upsert_arrays(entries: Iterable[VaultEntry], now: datetime) -> tuple[str, ...]:
    """``UPSERT_ARRAYS``' parameters for ``entries`` (no two with the same row key): each
    column as one array literal (infrastructure/pgarrays.py), not a list to adapt."""
    rows = list(entries)
    return (
        quoted([str(e.message_id) for e in rows]),
        quoted([e.holder_type for e in rows]),
        quoted([e.holder for e in rows]),
        quoted([e.key_id for e in rows]),
        hex_bytes([e.wrapped_key for e in rows]),
        quoted([now.isoformat()] * len(rows)),
    )


class SqlKeyVault:
    """Implements ``application.ports.KeyVault`` on the read-side database.

    Concurrent ``put`` calls share one transaction (a group commit, as for events): each
    returns once its rows are committed.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.committer = GroupCommitter(self._write)
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        upsert = insert(key_vault)
        # Built once: SQLAlchemy then compiles it once, not on every write.
        self._upsert = upsert.on_conflict_do_update(
            index_elements=["message_id", "holder_type", "holder"],
            set_={"key_id": upsert.excluded.key_id, "wrapped_key": upsert.excluded.wrapped_key},
        )

    def put(self, entries: list[VaultEntry]) -> None:
        if entries:
            self.committer.submit(entries)

    async def put_async(self, entries: list[VaultEntry]) -> None:
        """``put`` for a caller on an event loop: returns once the rows are committed."""
        if entries:
            await self.committer.submit_async(entries)

    def close(self) -> None:
        self.committer.close()

    def _write(self, entries: Sequence[VaultEntry]) -> list[Any]:
        now = datetime.now(UTC)
        # One statement may not touch a row twice: the last write of a key wins.
        latest = {(e.message_id, e.holder_type, e.holder): e for e in entries}
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # One statement of fixed text with a column array each: a unit of work
                # writes a key per participant of every message it encrypts.
                driver(conn).execute(
                    UPSERT_ARRAYS.format(qualified(conn, key_vault)),
                    upsert_arrays(latest.values(), now),
                    prepare=True,
                )
            else:
                conn.execute(
                    self._upsert,
                    [
                        {
                            "message_id": str(e.message_id),
                            "holder_type": e.holder_type,
                            "holder": e.holder,
                            "key_id": e.key_id,
                            "wrapped_key": e.wrapped_key,
                            "created_at": now,
                        }
                        for e in latest.values()
                    ],
                )
        return []

    def get(self, message_id: UUID, holder_type: HolderType, holder: str) -> VaultEntry | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(key_vault).where(
                    key_vault.c.message_id == str(message_id),
                    key_vault.c.holder_type == holder_type,
                    key_vault.c.holder == holder,
                )
            ).first()
        if row is None:
            return None
        return _entry(message_id, row)

    def get_many(
        self, holder_type: HolderType, wanted: list[tuple[UUID, str]]
    ) -> dict[tuple[UUID, str], VaultEntry]:
        """The entries of ``holder_type`` of these ``(message_id, holder)`` pairs that
        exist, in one query."""
        if not wanted:
            return {}
        ids = {str(message_id): message_id for message_id, _ in wanted}
        holders = {holder for _, holder in wanted}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(key_vault).where(
                    key_vault.c.message_id.in_(list(ids)),
                    key_vault.c.holder_type == holder_type,
                    key_vault.c.holder.in_(list(holders)),
                )
            ).all()
        found = {(ids[r.message_id], r.holder): _entry(ids[r.message_id], r) for r in rows}
        return {pair: found[pair] for pair in wanted if pair in found}

    def shred(self, message_id: UUID) -> int:
        """Delete every row of the message (keys, digest, tokens); count the keys."""
        with self.engine.begin() as conn:
            holders = conn.execute(
                delete(key_vault)
                .where(key_vault.c.message_id == str(message_id))
                .returning(key_vault.c.holder_type)
            ).scalars()
            return sum(1 for holder_type in holders if holds_key(holder_type))

    def _outdated(self, current: WrapFormat) -> Any:
        """Wraps not of the current format: the unbound one (no version byte), or an
        older version."""
        wrapped = key_vault.c.wrapped_key
        return or_(
            func.length(wrapped) == current.legacy_bytes,
            func.substr(wrapped, 1, 1) != current.version,
        )

    def _to_rewrap(self, holder_type: HolderType, key_id: str, current: WrapFormat) -> Any:
        return and_(
            key_vault.c.holder_type == holder_type,
            or_(key_vault.c.key_id != key_id, self._outdated(current)),
        )

    def entries_to_rewrap(
        self,
        holder_type: HolderType,
        key_id: str,
        current: WrapFormat,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[VaultEntry]:
        query = select(key_vault).where(self._to_rewrap(holder_type, key_id, current))
        if after is not None:
            message_id, holder = after
            query = query.where(
                or_(
                    key_vault.c.message_id > message_id,
                    and_(key_vault.c.message_id == message_id, key_vault.c.holder > holder),
                )
            )
        query = query.order_by(key_vault.c.message_id, key_vault.c.holder).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_entry(UUID(r.message_id), r) for r in rows]

    def count_to_rewrap(self, holder_type: HolderType, key_id: str, current: WrapFormat) -> int:
        query = select(func.count()).where(self._to_rewrap(holder_type, key_id, current))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_outdated(self, holder_type: HolderType, current: WrapFormat) -> int:
        query = select(func.count()).where(
            key_vault.c.holder_type == holder_type, self._outdated(current)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_by_key_id(self, holder_type: HolderType) -> dict[str, int]:
        query = (
            select(key_vault.c.key_id, func.count())
            .where(key_vault.c.holder_type == holder_type)
            .group_by(key_vault.c.key_id)
        )
        with self.engine.connect() as conn:
            return {str(key_id): int(n) for key_id, n in conn.execute(query).all()}

    def rewrap(self, entry: VaultEntry, key_id: str, wrapped_key: bytes) -> bool:
        # Compare-and-set: a row shredded (deleted) or rewrapped meanwhile is left alone.
        stmt = (
            update(key_vault)
            .where(
                key_vault.c.message_id == str(entry.message_id),
                key_vault.c.holder_type == entry.holder_type,
                key_vault.c.holder == entry.holder,
                key_vault.c.key_id == entry.key_id,
                key_vault.c.wrapped_key == entry.wrapped_key,
            )
            .values(key_id=key_id, wrapped_key=wrapped_key)
        )
        with self.engine.begin() as conn:
            return (conn.execute(stmt).rowcount or 0) == 1


def _entry(message_id: UUID, row: Any) -> VaultEntry:
    return VaultEntry(message_id, row.holder, row.key_id, bytes(row.wrapped_key), row.holder_type)
