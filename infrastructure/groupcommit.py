"""Group commit: concurrent saves share one transaction.

eventsourcing serialises writers with a table lock on PostgreSQL, so throughput comes
from putting many commands' events into one transaction, not from more threads. A
caller hands its events over and waits (``submit``, from any thread) or awaits
(``submit_async``, on an event loop: no thread is held while the transaction runs); one
writer thread takes everything that is waiting (up to ``max_batch``) and stores it at
once. If the batch conflicts (two commands raced on one aggregate), it is tried again in
quarters, and a quarter that conflicts too command by command, so that only the command
that really conflicts sees the error and retries. The key vault writes its rows the same
way (``infrastructure.vault``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError

log = logging.getLogger("courier.groupcommit")

Put = Callable[[Sequence[Any]], list[Any]]
SPLIT = 4  # a batch that conflicts is tried again in this many parts


class _Pending:
    """One command's items, and how its caller learns the outcome."""

    __slots__ = ("done", "error", "future", "items", "result")

    def __init__(
        self, items: Sequence[Any], future: asyncio.Future[list[Any]] | None = None
    ) -> None:
        self.items = items
        self.future = future
        self.done = threading.Event() if future is None else None
        self.result: list[Any] = []
        self.error: BaseException | None = None


class GroupCommitter:
    def __init__(self, put: Put, max_batch: int = 256) -> None:
        self.put = put
        self.max_batch = max_batch
        self.pending: queue.SimpleQueue[list[_Pending] | None] = queue.SimpleQueue()
        # What callers on an event loop submitted during the loop's current turn: handed
        # over at once at its end, one wake-up of the writer for all of them.
        self._turns: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.batches = 0
        self.commands = 0
        self.conflicts = 0  # batches that conflicted and were stored in parts

    def submit(self, events: Sequence[Any]) -> list[Any]:
        """Store ``events`` (one command's) and return their recordings, or raise."""
        self._ensure_started()
        item = _Pending(events)
        self.pending.put([item])
        assert item.done is not None
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def submit_async(self, events: Sequence[Any]) -> asyncio.Future[list[Any]]:
        """``submit`` for a caller on an event loop: a future of the recordings."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._ensure_started()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = []
            loop.call_soon(self._hand_over, loop)
        turn.append(_Pending(events, future))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        self.pending.put(self._turns.pop(loop))

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
            batch = list(first)
            while len(batch) < self.max_batch:
                try:
                    items = self.pending.get_nowait()
                except queue.Empty:
                    break
                if items is None:
                    self.pending.put(None)
                    break
                batch.extend(items)
            self._store(batch)
            _finish(batch)

    def _store(self, batch: list[_Pending]) -> None:
        self.batches += 1
        self.commands += len(batch)
        if len(batch) == 1:
            self._store_alone(batch[0])
            return
        if self._store_together(batch):
            return
        # One command (or more) conflicts with what is stored. Most often it is one, and
        # storing every command alone would cost a transaction each: the batch is tried
        # again in quarters, and only a quarter that conflicts too goes command by command.
        self.conflicts += 1
        size = -(-len(batch) // SPLIT)
        for start in range(0, len(batch), size):
            part = batch[start : start + size]
            if len(part) == 1 or not self._store_together(part):
                for item in part:
                    self._store_alone(item)

    def _store_together(self, items: list[_Pending]) -> bool:
        """Store ``items`` in one transaction; False, with nothing stored, on a conflict."""
        try:
            recordings = self.put([e for item in items for e in item.items])
        except IntegrityError:
            return False
        except BaseException as error:
            for item in items:
                item.error = error
            return True
        start = 0
        for item in items:
            item.result = recordings[start : start + len(item.items)]
            start += len(item.items)
        return True

    def _store_alone(self, item: _Pending) -> None:
        try:
            item.result = self.put(item.items)
        except BaseException as error:
            item.error = error


def _finish(batch: list[_Pending]) -> None:
    """Wake the waiting threads; settle the futures, one hand-over per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for item in batch:
        if item.done is not None:
            item.done.set()
        elif item.future is not None:
            by_loop.setdefault(item.future.get_loop(), []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            log.warning("an event loop closed before %d saves could be answered", len(items))


def _settle(items: list[_Pending]) -> None:
    for item in items:
        future = item.future
        if future is None or future.done():
            continue  # the caller gave up (its request was cancelled)
        if item.error is not None:
            future.set_exception(item.error)
        else:
            future.set_result(item.result)
