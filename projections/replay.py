"""Rebuilding a projection from the event log while the service keeps serving.

PostgreSQL: the view is rebuilt into copies of its tables in a schema of their own
(the shadow), with its own position. When the shadow has nearly caught up, one
transaction locks the live position (pausing the live runner of this view), locks
the live tables, applies the last few events to the shadow, drops the live tables
and moves the shadow tables into their place. Readers wait for a moment at most and
then read the new tables; the live runner resumes from the shadow's position.

SQLite (the embedded default): the rebuild happens in the live tables within one
write transaction. In WAL mode readers keep reading the old state until the commit
replaces it at once; writers of the read side wait for it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, Index, MetaData, delete, insert, select, text

from infrastructure.storage.eventlog import EventLog
from infrastructure.storage.positions import followers, read_position, write_position
from projections.catalog import ReadModel
from projections.runner import View, apply_batch_to
from projections.shared import Slice, reader_for

Progress = Callable[[int, int, int], None]  # position reached, head of the log, events applied


@dataclass(frozen=True)
class Rebuilt:
    projection: str
    start: int
    position: int
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def rebuild(
    engine: Engine,
    log_: EventLog,
    projection: ReadModel,
    *,
    start: int = 0,
    batch: int = 2000,
    progress: Progress | None = None,
    schema: str | None = None,
) -> Rebuilt:
    """Rebuild ``projection`` from position ``start`` (0: from the first event)."""
    projection.check_replay(start)
    job = _Job(engine, log_, projection, start, batch, progress or (lambda *_: None))
    if engine.dialect.name == "postgresql":
        return job.shadow(schema)
    return job.in_place()


class _Job:
    def __init__(
        self,
        engine: Engine,
        log_: EventLog,
        projection: ReadModel,
        start: int,
        batch: int,
        progress: Progress,
    ) -> None:
        self.engine = engine
        self.log = log_
        self.projection = projection
        self.view: View = projection.view()
        # Reads the log in pages, decoding only the events this view applies.
        self.read = reader_for(log_, self.view)
        self.start = start
        self.batch = batch
        self.progress = progress
        self.events = 0
        self.began = time.monotonic()

    def _done(self, position: int) -> Rebuilt:
        elapsed = time.monotonic() - self.began
        return Rebuilt(self.projection.name, self.start, position, self.events, elapsed)

    def _step(self, conn: Connection, after: int, head: int) -> int | None:
        """Apply the next page after ``after`` through ``conn``; None when none is left."""
        return self._apply(conn, self.read(after, self.batch), head)

    def _apply(self, conn: Connection, page: Slice, head: int) -> int | None:
        if not page.read:
            return None
        if page.events:
            apply_batch_to(self.view, page.events, conn)
        write_position(conn, self.projection.name, page.last)
        self.events += page.read
        self.progress(page.last, max(head, page.last), self.events)
        return page.last

    # ---- PostgreSQL: a shadow schema, then a swap -------------------------------------

    def shadow(self, schema: str | None) -> Rebuilt:
        name = self.projection.name
        with self.engine.begin() as conn:
            live = schema or str(conn.execute(text("SELECT current_schema()")).scalar_one())
            shadow = f"{live}__replay_{name}"[:63]
            q_live, q_shadow = _quote(conn, live), _quote(conn, shadow)
            conn.execute(text(f"DROP SCHEMA IF EXISTS {q_shadow} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {q_shadow}"))
            copies = MetaData()
            deferred: list[Index] = []
            for table in (*self.projection.tables, followers):
                copy = table.to_metadata(copies, schema=shadow)
                # Secondary indexes are built once, after the bulk of the rows are in:
                # cheaper than keeping each up to date row by row.
                for index in [i for i in copy.indexes if not i.unique]:
                    copy.indexes.discard(index)
                    deferred.append(index)
            copies.create_all(conn)
            self._seed(conn, live, shadow)
        translated = {"schema_translate_map": {None: shadow}}
        position = self.start - 1 if self.start else 0
        # The long part, while the live tables serve: up to the head as it was when it
        # began, then once more up to where the log has got to meanwhile.
        for lap in range(2):
            head = self.log.last_position()
            for page in self._read_ahead(position, head):
                with self.engine.begin() as conn:
                    reached = self._apply(conn.execution_options(**translated), page, head)
                position = reached if reached is not None else position
            if lap == 0:
                with self.engine.begin() as conn:
                    for index in deferred:
                        index.create(conn)
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '60s'"))
            conn.execute(
                select(followers.c.position).where(followers.c.name == name).with_for_update()
            )
            for table in self.projection.tables:
                conn.execute(text(f"LOCK TABLE {q_live}.{_quote(conn, table.name)}"))
            # The last few events, up to the head as it is now; later ones are left to
            # the live runner, which resumes from the position written below.
            head = self.log.last_position()
            conn.execution_options(**translated)
            while position < head and (reached := self._step(conn, position, head)) is not None:
                position = reached
            conn.execution_options(schema_translate_map=None)
            for table in self.projection.tables:
                q_table = _quote(conn, table.name)
                conn.execute(text(f"DROP TABLE {q_live}.{q_table}"))
                conn.execute(text(f"ALTER TABLE {q_shadow}.{q_table} SET SCHEMA {q_live}"))
            write_position(conn, name, position)
        with self.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {q_shadow} CASCADE"))
        return self._done(position)

    def _read_ahead(self, after: int, head: int) -> Iterator[Slice]:
        """The log's pages after ``after`` up to ``head``, read and decoded on a
        thread of their own while the previous page is being written."""
        batches: queue.Queue[Slice | BaseException | None] = queue.Queue(maxsize=2)
        stopping = threading.Event()

        def offer(item: Slice | BaseException | None) -> None:
            while not stopping.is_set():
                try:
                    batches.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def read() -> None:
            position = after
            try:
                while position < head and not stopping.is_set():
                    page = self.read(position, self.batch)
                    if not page.read:
                        break
                    offer(page)
                    position = page.last
                offer(None)
            except BaseException as error:
                offer(error)

        reader = threading.Thread(target=read, name=f"replay-{self.projection.name}", daemon=True)
        reader.start()
        try:
            while (item := batches.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopping.set()
            reader.join(timeout=10)

    def _seed(self, conn: Connection, live: str, shadow: str) -> None:
        """For --from: keep what the events before ``start`` made."""
        if not self.start:
            return
        for table in self.projection.tables:
            source = table.to_metadata(MetaData(), schema=live)
            target = table.to_metadata(MetaData(), schema=shadow)
            kept = select(source).where(source.c.position < self.start)
            conn.execute(insert(target).from_select(list(source.c.keys()), kept))
        copy = followers.to_metadata(MetaData(), schema=shadow)
        conn.execute(insert(copy).values(name=self.projection.name, position=self.start - 1))

    # ---- SQLite: one write transaction over the live tables -------------------------------

    def in_place(self) -> Rebuilt:
        name = self.projection.name
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                for table in reversed(self.projection.tables):
                    stmt = delete(table)
                    if self.start:
                        stmt = stmt.where(table.c.position >= self.start)
                    conn.execute(stmt)
                position = self.start - 1 if self.start else 0
                write_position(conn, name, position)
                head = self.log.last_position()
                while position < head and (reached := self._step(conn, position, head)):
                    position = reached
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
        return self._done(read_position_of(self.engine, name))


def read_position_of(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return read_position(conn, name)


def _quote(conn: Connection, identifier: str) -> str:
    return str(conn.dialect.identifier_preparer.quote_identifier(identifier))
