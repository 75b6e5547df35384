"""One reader of the log for every view of a process.

Each page of the notification log is read once and each event decoded once (only if
some view asks for its type), then handed to every view. The views apply a page in
one transaction, each writing its own position beside its rows, so each still applies
each event exactly once. Should that transaction fail, every view tries the page again
in a transaction of its own: those that fail wait out a backoff and are retried alone,
from their own position, while the others go on.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from infrastructure.storage.eventlog import (
    ApplicationLog,
    EventLog,
    Positioned,
    RawLog,
    topic_filter,
)
from infrastructure.storage.positions import followers
from projections.runner import View, ViewRunner, apply_batch_to

log = logging.getLogger("courier.projections")


def wanted_by(view: View) -> Callable[[str], bool] | None:
    """For a view's ``handles`` (event classes), topic -> whether the view needs it;
    None when the view needs every event."""
    handles: tuple[type, ...] | None = getattr(view, "handles", None)
    return None if handles is None else topic_filter(handles)


class Slice(NamedTuple):
    """What one read of the log gave a view: up to where, how many events were read,
    and the ones the view applies."""

    last: int
    read: int
    events: list[Positioned]


def reader_for(log_: EventLog, view: View) -> Callable[[int, int], Slice]:
    """``(after, limit)`` -> the next slice of the log for ``view`` (``read`` is 0 at the
    end of the log). Events the view has no use for are not decoded."""
    wants = wanted_by(view)
    if wants is None or not isinstance(log_, ApplicationLog) or isinstance(log_, RawLog):

        def read_all(after: int, limit: int) -> Slice:
            batch = log_.read(after, limit)
            return Slice(batch[-1][0] if batch else after, len(batch), batch)

        return read_all
    stored, decode = log_.stored, log_.decode

    def read(after: int, limit: int) -> Slice:
        notifications = stored(after, limit)
        if not notifications:
            return Slice(after, 0, [])
        batch = [(n.id, decode(n)) for n in notifications if wants(n.topic)]
        return Slice(int(notifications[-1].id), len(notifications), batch)

    return read


def _id(notification: Any) -> int:
    return int(notification.id)


@dataclass
class _Tracked:
    """One view of the group: where it is and whether it is waiting out a failure."""

    runner: ViewRunner
    raw: bool
    wants: Callable[[str], bool] | None
    position: int = 0
    retry_at: float = 0.0
    backoff: float = 0.0

    @property
    def name(self) -> str:
        return self.runner.view.name


class _Page:
    """Notifications as stored, decoded at most once each, when a view asks for them."""

    def __init__(self, notifications: list[Any], decode: Callable[[Any], Any]) -> None:
        self.notifications = notifications
        self.decode = decode
        self.events: list[Any] = [None] * len(notifications)
        self.last = int(notifications[-1].id) if notifications else 0

    def batch_for(self, tracked: _Tracked, after: int) -> list[Positioned]:
        """The events after ``after`` that ``tracked``'s view applies."""
        notifications = self.notifications
        start = bisect_right(notifications, after, key=_id)
        if tracked.raw:
            return [(n.id, n) for n in notifications[start:]]
        wants, events, decode = tracked.wants, self.events, self.decode
        batch: list[Positioned] = []
        for index in range(start, len(notifications)):
            n = notifications[index]
            if wants is not None and not wants(n.topic):
                continue
            event = events[index]
            if event is None:
                event = events[index] = decode(n)
            batch.append((n.id, event))
        return batch


class SharedFollower(threading.Thread):
    """Follows the log once for every view added to it (``add``)."""

    MAX_BACKOFF = 10.0

    def __init__(
        self,
        log_: ApplicationLog,
        engine: Engine,
        *,
        poll_interval: float = 0.05,
        batch_size: int = 500,
        max_batch_size: int = 4000,
    ) -> None:
        super().__init__(name="projections", daemon=True)
        self._log = log_
        self.engine = engine
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.max_batch_size = max_batch_size
        self.page_size = batch_size
        self.tracked: list[_Tracked] = []
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.caught_up = threading.Event()
        self.conn: Connection | None = None
        self.error_backoff = 0.5

    @property
    def log(self) -> ApplicationLog:
        return self._log

    def add(self, view: View, *, raw: bool = False) -> ViewRunner:
        """A runner for ``view`` fed by this follower (``raw``: stored, undecoded events)."""
        runner = ViewRunner(view, self.engine, self._log, follower=self)
        self.tracked.append(_Tracked(runner, raw, None if raw else wanted_by(view)))
        return runner

    def wake(self, _position: int = 0) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    # ---- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    full = self.step()
                    self.error_backoff = 0.5
                except Exception:
                    log.exception("projections failed; retrying from their last positions")
                    self._drop_connection()
                    self.stopping.wait(self.error_backoff)
                    self.error_backoff = min(self.error_backoff * 2, self.MAX_BACKOFF)
                    continue
                # Behind: a bigger page next, and no wait. Caught up: wait for news.
                if full:
                    self.page_size = min(self.page_size * 2, self.max_batch_size)
                    continue
                self.page_size = self.batch_size
                self.caught_up.set()
                self.wakeup.wait(self._pause())
                self.wakeup.clear()
        finally:
            self._drop_connection()

    def _pause(self) -> float:
        """Until the next poll, or sooner, when a view's backoff ends."""
        now = time.monotonic()
        waiting = [t.retry_at - now for t in self.tracked if t.retry_at > now]
        return max(0.0, min([self.poll_interval, *waiting]))

    def step(self) -> bool:
        """Bring every view that is not waiting out a failure one page further.

        Views a page or more apart (one that was failing and has come back, say) read
        pages of their own, so that the others are not held back. True when some page
        was full, i.e. the log holds more.
        """
        conn = self._connection()
        now = time.monotonic()
        due = sorted((t for t in self.tracked if t.retry_at <= now), key=lambda t: t.position)
        full = False
        while due:
            notifications = self._log.stored(due[0].position, self.page_size)
            if not notifications:
                break  # nothing after the lowest position: nothing after the others either
            page = _Page(notifications, self._log.decode)
            group = [t for t in due if t.position < page.last]
            self._apply(conn, group, page)
            full = full or len(notifications) >= self.page_size
            due = [t for t in due if t not in group]
        return full

    # ---- applying a page -----------------------------------------------------------------

    def _apply(self, conn: Connection, group: list[_Tracked], page: _Page) -> None:
        try:
            with conn.begin():
                done = self._lock_positions(conn, [t.name for t in group])
                applied = [self._apply_one(conn, t, page, done.get(t.name, 0)) for t in group]
                self._write_positions(conn, group, page, done)
        except Exception:
            log.warning("a page failed; applying it view by view", exc_info=True)
            self._drop_connection()
            for tracked in group:
                self._apply_alone(tracked, page)
            return
        for tracked, batch in zip(group, applied, strict=True):
            tracked.position = max(done.get(tracked.name, 0), page.last)
            self._committed(tracked, batch)

    def _apply_one(
        self, conn: Connection, tracked: _Tracked, page: _Page, done: int
    ) -> list[Positioned]:
        batch = page.batch_for(tracked, done) if done < page.last else []
        if batch:
            apply_batch_to(tracked.runner.view, batch, conn)
        return batch

    def _apply_alone(self, tracked: _Tracked, page: _Page) -> None:
        try:
            with self.engine.begin() as conn:
                positions = self._lock_positions(conn, [tracked.name])
                done = positions.get(tracked.name, 0)
                batch = self._apply_one(conn, tracked, page, done)
                self._write_positions(conn, [tracked], page, positions)
        except Exception:
            tracked.backoff = min(max(tracked.backoff * 2, 0.5), self.MAX_BACKOFF)
            tracked.retry_at = time.monotonic() + tracked.backoff
            log.exception(
                "projection %s failed at position %d; retrying it in %.1f s",
                tracked.name,
                tracked.position,
                tracked.backoff,
            )
            return
        tracked.position = max(done, page.last)
        self._committed(tracked, batch)

    def _committed(self, tracked: _Tracked, batch: Sequence[Positioned]) -> None:
        tracked.backoff = 0.0
        tracked.retry_at = 0.0
        after_commit = tracked.runner.after_commit
        if batch and after_commit is not None:
            after_commit(batch)

    # ---- positions -----------------------------------------------------------------------

    def _lock_positions(self, conn: Connection, names: list[str]) -> dict[str, int]:
        """The committed positions of ``names``, locked until the transaction ends (a
        replay swapping a view in, or another projections process, waits meanwhile)."""
        query = select(followers.c.name, followers.c.position).where(followers.c.name.in_(names))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        return {name: int(position) for name, position in conn.execute(query)}

    def _write_positions(
        self, conn: Connection, group: list[_Tracked], page: _Page, done: dict[str, int]
    ) -> None:
        moved = [{"n": t.name, "p": page.last} for t in group if done.get(t.name, 0) < page.last]
        if not moved:
            return
        missing = [row for row in moved if row["n"] not in done]
        if missing:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            rows = [{"name": row["n"], "position": row["p"]} for row in missing]
            conn.execute(insert(followers).on_conflict_do_nothing(), rows)
        present = [row for row in moved if row["n"] in done]
        if present:
            stmt = (
                update(followers)
                .where(followers.c.name == bindparam("n"))
                .values(position=bindparam("p"))
            )
            conn.execute(stmt, present)

    # ---- the connection, kept between pages ----------------------------------------------

    def _connection(self) -> Connection:
        if self.conn is None:
            self.conn = self.engine.connect()
            names = [t.name for t in self.tracked]
            query = select(followers.c.name, followers.c.position).where(
                followers.c.name.in_(names)
            )
            stored = {name: int(position) for name, position in self.conn.execute(query)}
            self.conn.rollback()
            for tracked in self.tracked:
                tracked.position = stored.get(tracked.name, 0)
        return self.conn

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.invalidate()
            conn.close()
        except Exception:
            log.debug("closing the projections' connection failed", exc_info=True)
