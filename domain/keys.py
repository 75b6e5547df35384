"""The user key registry: each user's RSA public keys, current and past."""

from __future__ import annotations

import functools
import json
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_T = "courier.keys:"


class NoKeyRegistered(Exception):
    """A user has no current public key."""


@functools.lru_cache(maxsize=65_536)  # asked for every participant of every encrypted send
def user_keys_id(tenant_id: str, user_id: str) -> UUID:
    return uuid5(NAMESPACE_URL, json.dumps(["courier:keys", tenant_id, user_id]))


class UserKeys(Aggregate):
    """Public keys a user registered; old key ids stay resolvable for old messages."""

    TOPIC = _T + "UserKeys"

    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        TOPIC = _T + "Created"
        tenant_id: str
        user_id: str

    class KeyRegistered(Event):
        TOPIC = _T + "KeyRegistered"
        key_id: str
        public_key_pem: str
        fingerprint: str
        created_at: str

    @staticmethod
    def create_id(tenant_id: str, user_id: str) -> UUID:
        return user_keys_id(tenant_id, user_id)

    @event(Created)
    def __init__(self, *, tenant_id: str, user_id: str, meta: dict[str, str]) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.keys: dict[str, dict[str, str]] = {}
        self.current_key_id: str | None = None

    @event(KeyRegistered)
    def register(
        self,
        key_id: str,
        public_key_pem: str,
        fingerprint: str,
        created_at: str,
        meta: dict[str, str],
    ) -> None:
        self.keys = {
            **self.keys,
            key_id: {
                "publicKeyPem": public_key_pem,
                "fingerprint": fingerprint,
                "createdAt": created_at,
            },
        }
        self.current_key_id = key_id

    def current(self) -> tuple[str, dict[str, str]]:
        if self.current_key_id is None:
            raise NoKeyRegistered(self.user_id)
        return self.current_key_id, self.keys[self.current_key_id]
