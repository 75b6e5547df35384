"""Running a view: each event applied exactly once, rows and position in one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from infrastructure.storage.eventlog import EventLog, Positioned
from infrastructure.storage.positions import read_position, write_position


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
    """The thread that feeds a runner (a process's ``SharedFollower``)."""

    @property
    def log(self) -> EventLog: ...
    def wake(self, _position: int = 0) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...


class ViewRunner:
    """Runs one view exactly once per event: rows and position in one transaction.

    ``follower`` feeds it (``projections.shared.SharedFollower``, one per process).
    """

    def __init__(
        self,
        view: View,
        engine: Engine,
        log_: EventLog,
        *,
        follower: Following,
        after_commit: Callable[[Sequence[Positioned]], None] | None = None,
    ) -> None:
        self.view = view
        self.engine = engine
        self.log = log_
        self.after_commit = after_commit
        self.follower = follower

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
