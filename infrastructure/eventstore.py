"""The PostgreSQL event store's insert, made cheap for the client, and able to carry a
send's key-vault rows in the same transaction as its events.

eventsourcing 9.5's PostgreSQL recorder inserts a batch of events as one array of a
composite type (``unnest(%s::stored_event[])``). psycopg adapts composite values in
Python, field by field, and composes the statement's identifiers again on every call:
on a busy API process that was a tenth of its CPU. This recorder sends the same rows
as four arrays (uuid/text, bigint, text, bytea), each passed as one string in the
array's text form (``infrastructure/pgarrays.py``), and renders its statements once.
Everything else — the table lock that keeps notification order equal to commit order,
the NOTIFY, the RETURNING of notification ids, the schema — is eventsourcing's own.

An encrypted send stores its wrapped data key in the key vault (outside the event log,
so that shredding can destroy it) and its events in the log. On PostgreSQL both live in
one database: ``with_keys`` lets a group commit hand the vault rows of its commands to
the recorder, which writes them in the events' transaction — one commit instead of two,
and never a key without its message or a message without its key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composable, Identifier

from application.ports import VaultEntry
from infrastructure.pgarrays import bare, hex_bytes, quoted
from infrastructure.vault import UPSERT_ARRAYS, upsert_arrays

TOPIC = "infrastructure.eventstore:PlainArraysRecorder"
VAULT_ROWS = "vault_rows"  # insert_events(..., vault_rows=[VaultEntry]) on this recorder


def with_keys(put: Callable[..., list[Any]]) -> Callable[[Sequence[Any]], list[Any]]:
    """A group commit's ``put`` (``EventStore.put``) that takes ``VaultEntry`` items among
    the events and has them written in the same transaction; each answers None."""

    def store(items: Sequence[Any]) -> list[Any]:
        keys = [i for i in items if isinstance(i, VaultEntry)]
        if not keys:
            return put(items)
        events = [i for i in items if not isinstance(i, VaultEntry)]
        recordings = iter(put(events, **{VAULT_ROWS: keys}))
        return [None if isinstance(i, VaultEntry) else next(recordings) for i in items]

    return store


class PlainArraysRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rendered: dict[str, bytes] = {}
        id_type = Identifier(self.datastore.originator_id_type)
        self._statements: dict[str, Composable] = {
            "insert": SQL(
                "INSERT INTO {schema}.{table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) "
                "RETURNING notification_id"
            ).format(
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
                id_type=id_type,
            ),
            "notify": SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
            "vault": UPSERT_ARRAYS.format(Identifier(self.datastore.schema, "key_vault")),
        }

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert in one round trip: BEGIN, the vault rows, LOCK, NOTIFY, INSERT and COMMIT
        go out together and are answered together.

        eventsourcing's own insert syncs after the INSERT and commits in a second round
        trip, with the table lock held in between while the client runs: a writer that
        is slow to be scheduled (a busy host, a process of lower priority) then holds up
        every other writer. A conflict still raises IntegrityError, and nothing is stored.
        """
        if not stored_events:
            return None  # as eventsourcing's: nothing to do, nothing done
        error: Exception | None = None
        ids: list[int] = []
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            with conn.pipeline() as pipeline:
                with conn.transaction():
                    self._insert_events(curs, stored_events, **kwargs)
                    self._insert_stored_events(curs, stored_events, **kwargs)
                try:
                    pipeline.sync()
                    ids = [int(row["notification_id"]) for row in curs.fetchall()]
                except Exception as e:
                    error = e  # raised once the pipeline is closed, as eventsourcing does
            if error is not None:
                raise error
        if len(ids) != len(stored_events):
            raise ProgrammingError(f"got {len(ids)} notification ids for {len(stored_events)}")
        return ids

    def _statement(self, name: str, curs: Cursor[DictRow]) -> bytes:
        rendered = self._rendered.get(name)
        if rendered is None:
            rendered = self._statements[name].as_bytes(curs)
            self._rendered[name] = rendered
        return rendered

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        entries: list[VaultEntry] = kwargs.get(VAULT_ROWS) or []
        if not entries:
            return
        # As SqlKeyVault.put: one statement may not touch a row twice, the last one wins.
        latest = {(e.message_id, e.holder_type, e.holder): e for e in entries}
        now = datetime.now(UTC)
        curs.execute(
            self._statement("vault", curs), upsert_arrays(latest.values(), now), prepare=True
        )

    def _notify_channel(self, curs: Cursor[DictRow]) -> None:
        curs.execute(self._statement("notify", curs), prepare=True)

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._statement("insert", curs),
            (
                quoted([str(e.originator_id) for e in stored_events]),
                bare([e.originator_version for e in stored_events]),
                quoted([e.topic for e in stored_events]),
                hex_bytes([e.state for e in stored_events]),
            ),
            prepare=True,
        )
