"""A follower of the event log: a thread that reads it in order and hands on batches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from infrastructure.storage.eventlog import EventLog, Positioned

log = logging.getLogger("courier.follower")


class LogFollower(threading.Thread):
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
