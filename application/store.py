"""How ``Messaging`` stores and loads: eventsourcing's ``save`` without its per-event
Protocol check, saves routed through a group committer or awaited on the caller's event
loop, listeners told of new positions, and the load-change-save retry."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError, Recording

from application.errors import NotFound
from application.ports import Crypto, VaultEntry

T = TypeVar("T")
CONFLICT_RETRIES = 20
LISTENERS_EVERY = 0.002


class KnownIds:
    """Ids of aggregates known to exist (they never stop existing), bounded in size."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._ids: OrderedDict[UUID, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def remember(self, item: UUID) -> None:
        with self._lock:
            self._ids[item] = None
            if len(self._ids) > self.limit:
                self._ids.popitem(last=False)


class Store(Application[UUID]):
    """The event store as the use cases of ``Messaging`` use it."""

    def __init__(self, crypto: Crypto, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self.crypto = crypto
        self._listeners: list[Callable[[int], None]] = []
        self._listeners_lock = threading.Lock()
        self._put: Callable[[list[Any]], list[Recording[UUID]]] | None = None
        self._put_async: (
            tuple[
                Callable[[list[Any]], Awaitable[list[Recording[UUID]]]],
                Callable[[list[VaultEntry]], Awaitable[None]] | None,
            ]
            | None
        ) = None
        self._get_async: Callable[[list[UUID]], Awaitable[list[Any]]] | None = None
        self._unheard: int | None = None  # newest position saved on the loop, not yet told

    def record_with(self, put: Callable[[list[Any]], list[Recording[UUID]]]) -> None:
        """Route every save through ``put`` (e.g. a group committer)."""
        self._put = put

    def read_async_with(self, get_many: Callable[[list[UUID]], Awaitable[list[Any]]]) -> None:
        """Let ``send_group_async`` read on the caller's event loop: ``get_many(ids)`` is
        awaited for the aggregates of ``ids`` (None where there is none), in order."""
        self._get_async = get_many

    def record_async_with(
        self,
        put_events: Callable[[list[Any]], Awaitable[list[Recording[UUID]]]],
        put_keys: Callable[[list[VaultEntry]], Awaitable[None]] | None,
    ) -> None:
        """Let ``send_direct_async`` store on the caller's event loop: ``put_events`` and
        ``put_keys`` are awaited instead of a thread waiting for the group commits.

        Without ``put_keys``, a send's key-vault rows go to ``put_events`` among its
        events (as ``VaultEntry`` items), to be stored in the same transaction."""
        self._put_async = (put_events, put_keys)

    async def _save_async(self, *events: Any) -> list[Recording[UUID]]:
        assert self._put_async is not None
        recordings = await self._put_async[0](list(events))
        positions = [r.notification.id for r in recordings if r and r.notification is not None]
        if positions:
            # Listeners (threads, woken at a cost) hear of the newest position saved at
            # most every LISTENERS_EVERY seconds, not of every save.
            if self._unheard is None:
                asyncio.get_running_loop().call_later(LISTENERS_EVERY, self._tell_listeners)
                self._unheard = 0
            self._unheard = max(self._unheard, *positions)
        return recordings

    def _tell_listeners(self) -> None:
        position, self._unheard = self._unheard, None
        if position:
            for listener in list(self._listeners):
                listener(position)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """eventsourcing's ``save``, with events taken as they are: its
        ``collect_events`` tells an event from an aggregate with a runtime Protocol
        check, which cost a unit of work of the worker a twentieth of its time."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, DomainEvent):
                processing_event.events.append(obj)
            elif obj is not None:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's (deprecated) hook
        return recordings

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        if self._put is None or processing_event.tracking is not None:
            return super()._record(processing_event)
        return self._put(list(processing_event.events))

    async def save_async(self, *aggregates: Any) -> None:
        """Save new aggregates' events through the async store, awaiting the commit."""
        await self._save_async(*(e for a in aggregates for e in a.collect_events()))

    def on_saved(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(last_position)`` after every save in this process."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        positions = [r.notification.id for r in recordings if r.notification is not None]
        if positions:
            for listener in list(self._listeners):
                listener(max(positions))

    def _get(self, cls: type[T], aggregate_id: UUID, tenant_id: str) -> T:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{cls.__name__.lower()} not found") from None
        if not isinstance(aggregate, cls) or getattr(aggregate, "tenant_id", None) != tenant_id:
            raise NotFound(f"{cls.__name__.lower()} not found")
        return aggregate

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run a load-change-save step again when another writer got there first."""
        for _ in range(CONFLICT_RETRIES):
            try:
                return attempt()
            except IntegrityError:
                continue
        return attempt()
