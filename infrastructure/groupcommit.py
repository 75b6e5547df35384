"""Group commit: concurrent saves share one event-store transaction.

eventsourcing serialises writers with a table lock on PostgreSQL, so throughput comes
from putting many commands' events into one transaction, not from more threads. A
caller hands its events over and waits; one writer thread takes everything that is
waiting (up to ``max_batch``) and stores it at once. If the batch conflicts (two
commands raced on one aggregate), each command is stored alone, so only the one that
really conflicts sees the error and retries.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import IntegrityError

log = logging.getLogger("courier.groupcommit")

Put = Callable[[Sequence[Any]], list[Any]]


@dataclass
class _Pending:
    events: Sequence[Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Any] = field(default_factory=list)
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, put: Put, max_batch: int = 256) -> None:
        self.put = put
        self.max_batch = max_batch
        self.pending: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.batches = 0
        self.commands = 0

    def submit(self, events: Sequence[Any]) -> list[Any]:
        """Store ``events`` (one command's) and return their recordings, or raise."""
        self._ensure_started()
        item = _Pending(events)
        self.pending.put(item)
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def close(self) -> None:
        if self.thread is not None:
            self.pending.put(None)
            self.thread.join(timeout=5)
            self.thread = None

    def _ensure_started(self) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(
                        target=self._run, name="group-commit", daemon=True
                    )
                    self.thread.start()

    def _run(self) -> None:
        while True:
            first = self.pending.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self.pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.pending.put(None)
                    break
                batch.append(item)
            self._store(batch)

    def _store(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.commands += len(batch)
        if len(batch) == 1:
            self._store_alone(batch[0])
            return
        try:
            recordings = self.put([e for item in batch for e in item.events])
        except IntegrityError:
            for item in batch:
                self._store_alone(item)
            return
        except BaseException as error:
            for item in batch:
                item.error = error
                item.done.set()
            return
        start = 0
        for item in batch:
            item.result = recordings[start : start + len(item.events)]
            start += len(item.events)
            item.done.set()

    def _store_alone(self, item: _Pending) -> None:
        try:
            item.result = self.put(item.events)
        except BaseException as error:
            item.error = error
        item.done.set()
