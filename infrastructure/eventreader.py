"""Reading the stored events of many aggregates in one query.

eventsourcing's recorders select one aggregate's events per query; a worker that runs a
batch of jobs needs hundreds of aggregates at once. These readers ask the recorder's own
table for all of them in one statement (chunked), in version order per aggregate, and
hand back eventsourcing's ``StoredEvent`` records, which the application decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

CHUNK = 500  # ids per statement (SQLite allows 999 parameters)


class PerAggregateReader:
    """Any recorder: one ``select_events`` per aggregate (the in-memory store, tests)."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def stored_events(self, ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        return {i: list(self.recorder.select_events(i)) for i in dict.fromkeys(ids)}


class PostgresEventReader:
    """``WHERE originator_id = ANY(%s)`` on the recorder's events table."""

    def __init__(self, recorder: Any) -> None:
        from psycopg.sql import SQL, Identifier

        self.recorder = recorder
        self.statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
        )

    def stored_events(self, ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        wanted = list(dict.fromkeys(ids))
        found: dict[UUID, list[StoredEvent]] = {i: [] for i in wanted}
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            for start in range(0, len(wanted), CHUNK):
                curs.execute(self.statement, [wanted[start : start + CHUNK]], prepare=True)
                for row in curs.fetchall():
                    found.setdefault(row["originator_id"], []).append(
                        StoredEvent(
                            originator_id=row["originator_id"],
                            originator_version=row["originator_version"],
                            topic=row["topic"],
                            state=bytes(row["state"]),
                        )
                    )
        return found


class SQLiteEventReader:
    """``WHERE originator_id IN (…)`` on the recorder's events table."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.table = recorder.events_table_name

    def stored_events(self, ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        wanted = list(dict.fromkeys(ids))
        found: dict[UUID, list[StoredEvent]] = {i: [] for i in wanted}
        with self.recorder.datastore.transaction(commit=False) as curs:
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                marks = ",".join("?" * len(chunk))
                curs.execute(
                    f"SELECT originator_id, originator_version, topic, state FROM {self.table} "
                    f"WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
                    [i.hex for i in chunk],
                )
                for row in curs.fetchall():
                    originator_id = self.recorder.convert_originator_id(row["originator_id"])
                    found.setdefault(originator_id, []).append(
                        StoredEvent(
                            originator_id=originator_id,
                            originator_version=row["originator_version"],
                            topic=row["topic"],
                            state=row["state"],
                        )
                    )
        return found


def event_reader(recorder: Any) -> PostgresEventReader | SQLiteEventReader | PerAggregateReader:
    """The cheapest reader the recorder allows."""
    from eventsourcing.postgres import PostgresAggregateRecorder
    from eventsourcing.sqlite import SQLiteAggregateRecorder

    if isinstance(recorder, PostgresAggregateRecorder):
        return PostgresEventReader(recorder)
    if isinstance(recorder, SQLiteAggregateRecorder):
        return SQLiteEventReader(recorder)
    return PerAggregateReader(recorder)
