"""Loading many aggregates at once, and keeping the newest copies at hand.

A batch of jobs touches hundreds of messages and the key registries of their
participants. Loading them one query each would cost more than the jobs themselves:
``Loader.get_many`` reads every one of them in a single query (infrastructure/
eventreader.py) and rebuilds them from their events. ``Kept`` holds the copies a worker
saved last, so that the next job of the same message starts from there without a read.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import StoredEvent

KEPT = 4096  # a message's jobs follow each other within seconds: enough, and bounded


class StoredEventReader(Protocol):
    def stored_events(self, ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]: ...


class Loader:
    """Rebuilds aggregates of ``app`` from the events ``reader`` returns for them."""

    def __init__(self, app: Application[UUID], reader: StoredEventReader) -> None:
        self.app = app
        self.reader = reader

    def get_many(self, ids: Iterable[UUID]) -> dict[UUID, Any]:
        """Every aggregate of ``ids`` that exists, by id (missing ones are left out)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        to_domain_event: Any = self.app.mapper.to_domain_event
        found: dict[UUID, Any] = {}
        for aggregate_id, stored in self.reader.stored_events(wanted).items():
            aggregate: Any = None
            for record in stored:
                aggregate = to_domain_event(record).mutate(aggregate)
            if aggregate is not None:
                found[aggregate_id] = aggregate
        return found


class Kept:
    """The newest saved copy of recently changed aggregates (one owner thread, bounded)."""

    def __init__(self, limit: int = KEPT) -> None:
        self.limit = limit
        self._copies: OrderedDict[UUID, Any] = OrderedDict()

    def get(self, aggregate_id: UUID) -> Any | None:
        return self._copies.get(aggregate_id)

    def keep(self, aggregate: Any) -> None:
        self._copies[aggregate.id] = aggregate
        self._copies.move_to_end(aggregate.id)
        while len(self._copies) > self.limit:
            self._copies.popitem(last=False)

    def forget(self, aggregate_id: UUID) -> None:
        self._copies.pop(aggregate_id, None)

    def clear(self) -> None:
        self._copies.clear()
