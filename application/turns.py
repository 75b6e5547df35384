"""Jobs of one message take turns in a process, each starting where the last one left off.

The jobs of one message, a group's delivery batches above all, would otherwise race
each other: each loads the message, records its event, and all but one find on saving
that another got there first, load it again and try again — work that grows with the
square of the batches. Taking turns per message, each job starts from the message as
the previous one saved it. Only a writer in another process can still make a save
conflict; the message is then loaded afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from domain.message import Message

KEPT = 1024


class Turns:
    def __init__(self, kept: int = KEPT) -> None:
        self._lock = threading.Lock()
        self._turns: dict[UUID, tuple[threading.Lock, int]] = {}
        self._kept: OrderedDict[UUID, Message] = OrderedDict()
        self._limit = kept

    @contextmanager
    def turn(self, message_id: UUID) -> Iterator[None]:
        """Wait for this message's turn; only one holder at a time per message."""
        with self._lock:
            lock, waiting = self._turns.get(message_id, (threading.Lock(), 0))
            self._turns[message_id] = (lock, waiting + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, waiting = self._turns[message_id]
                if waiting <= 1:
                    del self._turns[message_id]
                else:
                    self._turns[message_id] = (lock, waiting - 1)

    def take(self, message_id: UUID, loaded: Message | None) -> Message | None:
        """The newest copy at hand (kept or ``loaded``), or None. Call during a turn."""
        with self._lock:
            kept = self._kept.pop(message_id, None)
        copies = [m for m in (kept, loaded) if m is not None]
        return max(copies, key=lambda m: m.version) if copies else None

    def keep(self, message: Message) -> None:
        """``message`` is as stored: the next turn may start from it."""
        with self._lock:
            self._kept[message.id] = message
            self._kept.move_to_end(message.id)
            while len(self._kept) > self._limit:
                self._kept.popitem(last=False)
