"""Short-lived, single-use WebSocket tickets (docs/REALTIME.md, "Connecting").

``POST /api/ws/ticket`` issues one; ``/ws?ticket=`` redeems it, once, before it expires.
A ticket is 256 random bits; the store keeps what it stands for under the ticket's
SHA-256, not the ticket itself. In Redis (``REDIS_URL``) every API process shares the
tickets, and ``GETDEL`` makes redeeming atomic across them; without Redis they live in
the process (the embedded runtime has one API process).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

KEY_PREFIX = "courier:ws-ticket:"
_TICKET = re.compile(r"[A-Za-z0-9_-]{43}")  # what secrets.token_urlsafe(32) makes


class TicketsUnavailable(Exception):
    """The shared store of tickets cannot be reached (answered 503)."""


class Tickets(Protocol):
    def issue(self, payload: str, ttl_seconds: float) -> str:
        """A new ticket standing for ``payload``, valid for ``ttl_seconds``."""
        ...

    def redeem(self, ticket: str) -> str | None:
        """The payload of a live ticket, which is used up; None if unknown, used or expired."""
        ...


def _key(ticket: str) -> str:
    return KEY_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def _well_formed(ticket: str) -> bool:
    return _TICKET.fullmatch(ticket) is not None


class LocalTickets:
    """Tickets in this process (the embedded runtime)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, str]] = {}

    def issue(self, payload: str, ttl_seconds: float) -> str:
        ticket = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[_key(ticket)] = (now + ttl_seconds, payload)
        return ticket

    def redeem(self, ticket: str) -> str | None:
        if not _well_formed(ticket):
            return None
        with self._lock:
            found = self._items.pop(_key(ticket), None)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]


class RedisTickets:
    """Tickets in Redis, shared by every API process; Redis expires them."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def issue(self, payload: str, ttl_seconds: float) -> str:
        ticket = secrets.token_urlsafe(32)
        try:
            self.client.set(_key(ticket), payload, px=max(1, int(ttl_seconds * 1000)), nx=True)
        except RedisError as error:
            raise TicketsUnavailable(type(error).__name__) from None
        return ticket

    def redeem(self, ticket: str) -> str | None:
        if not _well_formed(ticket):
            return None
        try:
            value = self.client.getdel(_key(ticket))
        except RedisError as error:
            raise TicketsUnavailable(type(error).__name__) from None
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
