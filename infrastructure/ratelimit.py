"""Rate limits per user and per address: fixed windows, in Redis or in this process.

With ``REDIS_URL`` every API process counts in the same Redis keys, so a limit holds
however many processes a load balancer spreads a client over; without it each process
counts for itself. Redis being unreachable lets requests through (and says so in the
log): the limits protect the service, they must not take it down with Redis.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("courier.ratelimit")

KEY_PREFIX = "courier:ratelimit:"
MAX_LOCAL_KEYS = 100_000
WARN_EVERY_SECONDS = 30.0

# One round trip: count this hit, start the window on the first, say how long it has left.
WINDOW_SCRIPT = """
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if hits == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
"""


@dataclass(frozen=True)
class Rule:
    """``limit`` hits per ``window`` seconds; a limit of 0 is no limit."""

    limit: int
    window: float


class Windows(Protocol):
    async def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count a hit on ``key``: the hits in its current window, and seconds left in it."""
        ...

    async def close(self) -> None: ...


class LocalWindows:
    """Counters in this process (the embedded default, or no ``REDIS_URL``)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.counters: dict[str, tuple[float, int]] = {}

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        now = self.clock()
        ends, hits = self.counters.get(key, (0.0, 0))
        if now >= ends:
            if len(self.counters) >= MAX_LOCAL_KEYS:
                self._prune(now)
            ends, hits = now + window, 0
        hits += 1
        self.counters[key] = (ends, hits)
        return hits, ends - now

    def _prune(self, now: float) -> None:
        self.counters = {k: v for k, v in self.counters.items() if v[0] > now}

    async def close(self) -> None:
        self.counters.clear()


class RedisWindows:
    """Counters shared by every API process, one expiring Redis key per window."""

    def __init__(self, client: Any) -> None:
        self.client = client  # a redis.asyncio.Redis: connects on first use, not here
        self.script = client.register_script(WINDOW_SCRIPT)

    async def hit(self, key: str, window: float) -> tuple[int, float]:
        hits, ttl_ms = await self.script(keys=[KEY_PREFIX + key], args=[int(window * 1000)])
        return int(hits), max(0.0, int(ttl_ms) / 1000.0)

    async def close(self) -> None:
        await self.client.aclose()


class RateLimiter:
    """Answers how long a caller must wait (0: go ahead), per user and per address."""

    def __init__(self, windows: Windows, per_user: Rule, per_address: Rule) -> None:
        self.windows = windows
        self.per_user = per_user
        self.per_address = per_address
        self._warned_at = -math.inf

    async def user(self, tenant_id: str, user_id: str) -> float:
        # Lengths first, so that no tenant and user pair can be spelt like another.
        return await self._wait(f"u:{len(tenant_id)}:{tenant_id}:{user_id}", self.per_user)

    async def address(self, address: str) -> float:
        return await self._wait(f"a:{address}", self.per_address)

    async def _wait(self, key: str, rule: Rule) -> float:
        if rule.limit <= 0:
            return 0.0
        try:
            hits, left = await self.windows.hit(key, rule.window)
        except Exception as error:  # redis.RedisError, OSError: fail open
            self._warn(error)
            return 0.0
        return 0.0 if hits <= rule.limit else max(left, 0.001)

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("rate limits not enforced: Redis unavailable (%s)", type(error).__name__)

    async def close(self) -> None:
        await self.windows.close()
