"""Followers of the event log: read notifications in order, hand events on in batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from eventsourcing.utils import resolve_topic
from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from projections.tables import followers

log = logging.getLogger("courier.follower")

Positioned = tuple[int, Any]  # (notification id, domain event)


class EventLog(Protocol):
    """What a follower needs of the event store: ordered, decodable notifications."""

    def read(self, after: int, limit: int) -> list[Positioned]: ...
    def last_position(self) -> int: ...


class ApplicationLog:
    """An eventsourcing application's notification log as an EventLog."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def read(self, after: int, limit: int) -> list[Positioned]:
        decode = self.app.mapper.to_domain_event
        return [(n.id, decode(n)) for n in self.stored(after, limit)]

    def stored(self, after: int, limit: int) -> list[Any]:
        """The notifications after ``after`` as stored: not decoded."""
        return list(
            self.app.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
        )

    def decode(self, notification: Any) -> Any:
        return self.app.mapper.to_domain_event(notification)

    def last_position(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)


def topic_filter(handles: tuple[type, ...]) -> Callable[[str], bool]:
    """Topic -> whether its event class is one of ``handles``; each topic resolved once,
    so that the check costs a dictionary lookup per event."""
    known: dict[str, bool] = {}

    def wants(topic: str) -> bool:
        try:
            return known[topic]
        except KeyError:
            cls = resolve_topic(topic)
            known[topic] = answer = isinstance(cls, type) and issubclass(cls, handles)
            return answer

    return wants


class SelectiveLog:
    """The log as a follower that needs only some event types sees it: those decoded,
    every other event as ``(position, None)`` (so that its position still moves on),
    without the cost of decoding it."""

    def __init__(self, log_: ApplicationLog, handles: tuple[type, ...]) -> None:
        self.log_ = log_
        self.wants = topic_filter(handles)

    def read(self, after: int, limit: int) -> list[Positioned]:
        decode, wants = self.log_.decode, self.wants
        return [
            (n.id, decode(n) if wants(n.topic) else None) for n in self.log_.stored(after, limit)
        ]

    def last_position(self) -> int:
        return self.log_.last_position()


class RawLog(ApplicationLog):
    """The notification log as stored, not decoded (for the audit chain)."""

    def read(self, after: int, limit: int) -> list[Positioned]:
        return [(n.id, n) for n in self.stored(after, limit)]


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


class Follower(threading.Thread):
    """Polls the log and calls ``handle(batch)``; wakes early when told something was saved."""

    def __init__(
        self,
        name: str,
        log_: EventLog,
        handle: Callable[[Sequence[Positioned]], None],
        start_after: Callable[[], int],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        skip_ahead: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(name=f"follower-{name}", daemon=True)
        self.skip_ahead = skip_ahead
        self.follower_name = name
        self.log = log_
        self.handle = handle
        self.start_after = start_after
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.position = 0
        self.stopping = threading.Event()
        self.wakeup = threading.Event()
        self.caught_up = threading.Event()
        self.error_backoff = 0.5

    def wake(self, _position: int = 0) -> None:
        self.wakeup.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()

    def step(self) -> int:
        """Read and handle one batch; the number of events handled.

        ``skip_ahead``, if given, may move the follower past events it has no use for
        right now (its new position), instead of reading and decoding them.
        """
        ahead = self.skip_ahead() if self.skip_ahead is not None else None
        if ahead is not None:
            self.position = max(self.position, ahead)
            return 0
        batch = self.log.read(self.position, self.batch_size)
        if batch:
            self.handle(batch)
            self.position = batch[-1][0]
        return len(batch)

    def run(self) -> None:
        started = False
        while not self.stopping.is_set():
            try:
                if not started:
                    self.position = self.start_after()
                    started = True
                handled = self.step()
                self.error_backoff = 0.5
            except Exception:
                log.exception("%s failed; retrying from its last position", self.follower_name)
                started = False
                self.stopping.wait(self.error_backoff)
                self.error_backoff = min(self.error_backoff * 2, 10.0)
                continue
            if handled < self.batch_size:
                self.caught_up.set()
                self.wakeup.wait(self.poll_interval)
                self.wakeup.clear()


class View(Protocol):
    """A read model: applies events to its rows within the caller's transaction.

    A view may also define ``apply_many(batch, conn)`` to write a whole batch at once.
    """

    name: str

    def apply(self, event: Any, conn: Connection, position: int) -> None: ...


def apply_batch_to(view: View, batch: Sequence[Positioned], conn: Connection) -> None:
    """Apply ``batch`` in order: in one go when the view can, else event by event."""
    apply_many = getattr(view, "apply_many", None)
    if apply_many is not None:
        apply_many(batch, conn)
        return
    for position, event in batch:
        view.apply(event, conn, position)


class Following(Protocol):
    """The thread that feeds a runner: its own ``Follower`` or a process's shared one."""

    @property
    def log(self) -> EventLog: ...
    def wake(self, _position: int = 0) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class ProjectionRunner:
    """Runs one view exactly once per event: rows and position in one transaction.

    Alone it follows the log on a thread of its own; given ``follower`` (see
    ``projections.shared.SharedFollower``) it is fed by that one instead.
    """

    def __init__(
        self,
        view: View,
        engine: Engine,
        log_: EventLog,
        *,
        after_commit: Callable[[Sequence[Positioned]], None] | None = None,
        poll_interval: float = 0.05,
        batch_size: int = 500,
        follower: Following | None = None,
    ) -> None:
        self.view = view
        self.engine = engine
        self.log = log_
        self.after_commit = after_commit
        self.follower: Following = follower or Follower(
            view.name,
            log_,
            self.apply_batch,
            self.committed_position,
            batch_size=batch_size,
            poll_interval=poll_interval,
        )

    def committed_position(self) -> int:
        with self.engine.connect() as conn:
            return read_position(conn, self.view.name)

    def apply_batch(self, batch: Sequence[Positioned]) -> None:
        with self.engine.begin() as conn:
            done = read_position(conn, self.view.name, lock=True)
            fresh = [(pos, event) for pos, event in batch if pos > done]
            apply_batch_to(self.view, fresh, conn)
            if fresh:
                write_position(conn, self.view.name, fresh[-1][0])
        if fresh and self.after_commit is not None:
            self.after_commit(fresh)

    def catch_up(self, until: int | None = None, timeout: float = 30.0) -> bool:
        """Wait (with a deadline) until the view has applied the log up to ``until``."""
        deadline = time.monotonic() + timeout
        target = until if until is not None else self.log.last_position()
        while time.monotonic() < deadline:
            if self.committed_position() >= target:
                return True
            self.follower.wake()
            time.sleep(0.02)
        return False
