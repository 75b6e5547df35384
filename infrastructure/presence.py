"""Who is connected right now: in-process for the embedded default, Redis across processes."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

PRESENCE_TTL = 60


def _key(tenant_id: str, user_id: str) -> str:
    return f"courier:online:{tenant_id}:{user_id}"


class LocalPresence:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def connected(self, tenant_id: str, user_id: str) -> None:
        with self._lock:
            self._counts[(tenant_id, user_id)] += 1

    def disconnected(self, tenant_id: str, user_id: str) -> None:
        with self._lock:
            self._counts[(tenant_id, user_id)] -= 1
            if self._counts[(tenant_id, user_id)] <= 0:
                del self._counts[(tenant_id, user_id)]

    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        with self._lock:
            return {u for u in user_ids if self._counts.get((tenant_id, u), 0) > 0}

    def refresh(self) -> None:
        """Nothing to refresh in one process."""


class RedisPresence(LocalPresence):
    """Each API process adds itself to a per-user Redis set, refreshed with a TTL."""

    def __init__(self, client: Any) -> None:
        super().__init__()
        self.client = client
        self.process_id = uuid.uuid4().hex

    def connected(self, tenant_id: str, user_id: str) -> None:
        super().connected(tenant_id, user_id)
        pipe = self.client.pipeline()
        pipe.sadd(_key(tenant_id, user_id), self.process_id)
        pipe.expire(_key(tenant_id, user_id), PRESENCE_TTL)
        pipe.execute()

    def disconnected(self, tenant_id: str, user_id: str) -> None:
        super().disconnected(tenant_id, user_id)
        if not super().online(tenant_id, [user_id]):
            self.client.srem(_key(tenant_id, user_id), self.process_id)

    def refresh(self) -> None:
        with self._lock:
            keys = [_key(t, u) for (t, u) in self._counts]
        if keys:
            pipe = self.client.pipeline()
            for key in keys:
                pipe.sadd(key, self.process_id)
                pipe.expire(key, PRESENCE_TTL)
            pipe.execute()

    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        if not user_ids:
            return set()
        pipe = self.client.pipeline()
        for user in user_ids:
            pipe.exists(_key(tenant_id, user))
        found = pipe.execute()
        return {u for u, present in zip(user_ids, found, strict=True) if present}
