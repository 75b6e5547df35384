"""Fail fast while PostgreSQL is down: a gate in front of the event store's pool.

eventsourcing retries each store call ten times, and each try waits the pool's whole
timeout for a connection that cannot come while the server is down: close to a minute
before a command could answer, with every later command queued behind it. After a
connection fails, the gate answers at once instead (eventsourcing's
``OperationalError``, which the HTTP layer turns into 503 with ``Retry-After``) until a
direct connection attempt, one at a time and at most every ``probe_every`` seconds,
finds the server accepting connections again; then the pool is used as before.

A lock wait that runs out (``lock_timeout``: a holder of the event store's table lock is
stuck, e.g. a paused process) is no connection failure: the gate stays open, and the error
is raised as ``LockTimeout`` at once instead of eventsourcing's ``OperationalError``,
which its ``@retry`` would try nine more times, each waiting the whole ``lock_timeout``
again (20 s and more). The HTTP layer answers it 503 with ``Retry-After``, like an outage.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError

log = logging.getLogger("courier.store")

Probe = Callable[[], bool]


class LockTimeout(psycopg.OperationalError):
    """A statement waited ``lock_timeout`` for a lock; the caller may try again shortly."""


def _lock_timeout(error: BaseException) -> bool:
    return isinstance(error.__cause__, psycopg.errors.LockNotAvailable)


class StoreGate:
    """Open while the store answers; shut after a connection failure, until a probe passes."""

    def __init__(
        self,
        probe: Probe,
        probe_every: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.probe = probe
        self.on_open = on_open
        self.probe_every = probe_every
        self.clock = clock
        self.down = False
        self.next_probe = 0.0
        self.probing = threading.Lock()

    def check(self) -> None:
        """Return if the store may be used now; else raise ``OperationalError`` at once."""
        if not self.down:
            return
        if self.clock() >= self.next_probe and self.probing.acquire(blocking=False):
            try:
                self.next_probe = self.clock() + self.probe_every
                if self.probe():
                    if self.on_open is not None:
                        with contextlib.suppress(Exception):
                            self.on_open()
                    self.down = False
                    log.info("the event store answers again")
                    return
            finally:
                self.probing.release()
        raise OperationalError("the event store is unreachable")

    def failed(self) -> None:
        """A call failed on the connection: shut, and probe on the next call."""
        if not self.down:
            log.warning("the event store is unreachable; failing fast until it answers")
        self.down = True
        self.next_probe = self.clock()


def connects(kwargs: dict[str, Any], timeout: float = 2.0) -> Probe:
    """A probe: can a new connection with these psycopg arguments run ``SELECT 1``?"""
    params = {k: v for k, v in kwargs.items() if k != "row_factory"}

    def probe() -> bool:
        try:
            with psycopg.connect(**params, connect_timeout=max(1, int(timeout))) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    return probe


def install(datastore: Any, gate: StoreGate) -> None:
    """Put ``gate`` in front of an eventsourcing ``PostgresDatastore``'s connections.

    Every recorder method reaches the pool through ``datastore.get_connection``
    (``transaction`` and ``cursor`` too), so wrapping that one method covers them all.
    """
    original = datastore.get_connection

    @contextlib.contextmanager
    def get_connection() -> Iterator[Any]:
        gate.check()
        try:
            with original() as conn:
                try:
                    yield conn
                except psycopg.errors.LockNotAvailable:
                    # The aborted pipeline may have dropped a statement psycopg counts
                    # as prepared ("prepared statement _pg3_N does not exist" on its
                    # next use): the pool replaces this connection instead.
                    conn.close()
                    raise
        except OperationalError as error:
            if _lock_timeout(error):
                raise LockTimeout(str(error)) from error
            gate.failed()
            raise
        except InterfaceError:
            gate.failed()
            raise

    datastore.get_connection = get_connection


def guard(recorder: Any, probe_every: float = 0.5) -> StoreGate | None:
    """Gate the recorder's PostgreSQL datastore (None for other stores)."""
    datastore = getattr(recorder, "datastore", None)
    pool = getattr(datastore, "pool", None)
    if pool is None or not isinstance(getattr(pool, "kwargs", None), dict):
        return None
    # On reopening, the pool drops its idle connections that died with the server, so
    # that they do not fail one by one and shut the gate again.
    gate = StoreGate(connects(pool.kwargs), probe_every, on_open=pool.check)
    install(datastore, gate)
    return gate
