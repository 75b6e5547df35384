"""The key registry: users' public keys, registered, looked up and required."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from eventsourcing.application import AggregateNotFoundError

from application.errors import Invalid, MissingKeys, NotFound
from application.ports import Crypto, InvalidPublicKey
from application.store import KnownIds, Store
from domain.events import Context
from domain.keys import NoKeyRegistered, UserKeys
from domain.keys import user_keys_id as _user_keys_id

# Asked for every participant of every encrypted send: a uuid5 of JSON each time.
user_keys_id = functools.lru_cache(maxsize=65_536)(_user_keys_id)


@dataclass(frozen=True)
class RegisteredKey:
    """The caller's key, as registered (``created_at``: RFC 3339, UTC)."""

    key_id: str
    fingerprint: str
    created_at: str


@dataclass(frozen=True)
class PublicKey:
    """A user's public key, current or replaced."""

    user_id: str
    key_id: str
    public_key_pem: str
    fingerprint: str


class KeyRegistry(Store):
    """Users' public keys: registered, looked up, required of encrypted sends."""

    def __init__(self, crypto: Crypto, env: dict[str, str] | None = None) -> None:
        super().__init__(crypto, env)
        self._known_key_holders = KnownIds()

    def register_key(self, ctx: Context, public_key_pem: str) -> RegisteredKey:
        try:
            info = self.crypto.cipher.inspect_public_key(public_key_pem)
        except InvalidPublicKey as error:
            raise Invalid(str(error), [{"field": "publicKeyPem", "issue": str(error)}]) from None
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")

        def attempt() -> RegisteredKey:
            keys = self._user_keys(ctx.tenant_id, ctx.actor_id)
            if keys is None:
                keys = UserKeys(
                    tenant_id=ctx.tenant_id,
                    user_id=ctx.actor_id,
                    meta=ctx.as_meta(),
                )
            if keys.current_key_id != info.key_id:
                keys.register(
                    info.key_id, public_key_pem, info.fingerprint, created_at, ctx.as_meta()
                )
                self.save(keys)
            entry = keys.keys[info.key_id]
            return RegisteredKey(info.key_id, info.fingerprint, entry["createdAt"])

        return self.retrying(attempt)

    def public_key(self, ctx: Context, user_id: str, key_id: str | None = None) -> PublicKey:
        """A user's current public key, or (``key_id``) any key they ever registered."""
        keys = self._user_keys(ctx.tenant_id, user_id)
        if keys is None or keys.current_key_id is None:
            raise NotFound("no public key registered for this user")
        if key_id is None:
            key_id, entry = keys.current()
        elif key_id in keys.keys:
            entry = keys.keys[key_id]
        else:
            raise NotFound("this user never registered a key with this key id")
        return PublicKey(user_id, key_id, entry["publicKeyPem"], entry["fingerprint"])

    def _user_keys(self, tenant_id: str, user_id: str) -> UserKeys | None:
        try:
            keys: object = self.repository.get(user_keys_id(tenant_id, user_id))
        except AggregateNotFoundError:
            return None
        return keys if isinstance(keys, UserKeys) else None

    def _current_key_id(self, tenant_id: str, user_id: str) -> str | None:
        keys = self._user_keys(tenant_id, user_id)
        return keys.current_key_id if keys else None

    def current_public_key(self, tenant_id: str, user_id: str) -> tuple[str, str]:
        keys = self._user_keys(tenant_id, user_id)
        if keys is None:
            raise NoKeyRegistered(user_id)
        key_id, entry = keys.current()
        return key_id, entry["publicKeyPem"]

    def _require_keys(self, tenant_id: str, user_ids: list[str]) -> None:
        # A registered key is only ever replaced, never removed: who had one has one.
        missing = []
        for user in user_ids:
            holder = user_keys_id(tenant_id, user)
            if holder in self._known_key_holders:
                continue
            if self._current_key_id(tenant_id, user) is None:
                missing.append(user)
            else:
                self._known_key_holders.remember(holder)
        if missing:
            raise missing_keys(missing)


def missing_keys(missing: list[str]) -> MissingKeys:
    return MissingKeys(
        "an encrypted message needs a registered public key for every participant; "
        f"missing for: {', '.join(missing)}",
        [{"field": "userId", "issue": f"no public key registered for {u}"} for u in missing],
    )
