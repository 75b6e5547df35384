"""The blind index: keyed tokens of words, so that encrypted messages can be searched.

Each tenant has an index key of its own: 32 random bytes made on first use, kept in
``search_index_keys`` wrapped by the service keyring (like a data key, but never
used to seal content, and no content key is ever used here). A token is
HMAC-SHA256(index key, word), cut to 96 bits and base64url-encoded: the same word
gives the same token within a tenant, and nothing outside it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from application.ports import Keyring, index_key_context
from infrastructure.tables import search_index_keys

KEY_BYTES = 32
TOKEN_BYTES = 12
CACHED_TENANTS = 1024
_DOMAIN = b"courier:blind-index:v1:"


def token_of(key: bytes, word: str) -> str:
    mac = _keyed(key).copy()
    mac.update(word.encode("utf-8"))
    return base64.urlsafe_b64encode(mac.digest()[:TOKEN_BYTES]).decode("ascii")


@functools.lru_cache(maxsize=CACHED_TENANTS)
def _keyed(key: bytes) -> hmac.HMAC:
    # The key and the domain prefix hashed once per key; each word then costs a copy.
    # (``hmac.digest`` would hash them again and let go of the GIL for every word: on
    # the API's event loop, each such hand-off can wait behind another thread.)
    return hmac.new(key, _DOMAIN, hashlib.sha256)


class HmacBlindIndex:
    """Implements ``application.ports.BlindIndex`` with per-tenant keys in the database."""

    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def tokens(self, tenant_id: str, words: list[str]) -> list[str]:
        """Sorted distinct tokens: their order says nothing about the words' order."""
        if not words:
            return []
        key = self._key(tenant_id)
        return sorted({token_of(key, word) for word in words})

    def _key(self, tenant_id: str) -> bytes:
        with self._lock:
            key = self._keys.get(tenant_id)
            if key is not None:
                self._keys.move_to_end(tenant_id)
                return key
        key = self._load_or_create(tenant_id)
        with self._lock:
            self._keys[tenant_id] = key
            while len(self._keys) > CACHED_TENANTS:
                self._keys.popitem(last=False)
        return key

    def _load_or_create(self, tenant_id: str) -> bytes:
        table = search_index_keys
        query = select(table.c.key_id, table.c.wrapped_key).where(table.c.tenant_id == tenant_id)
        with self.engine.begin() as conn:
            row = conn.execute(query).first()
            if row is None:
                context = index_key_context(tenant_id)
                key_id, wrapped = self.keyring.wrap(os.urandom(KEY_BYTES), context)
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                conn.execute(
                    insert(table)
                    .values(
                        tenant_id=tenant_id,
                        key_id=key_id,
                        wrapped_key=wrapped,
                        created_at=datetime.now(UTC),
                    )
                    .on_conflict_do_nothing()
                )
                # Another process may have made the tenant's key first: theirs wins.
                row = conn.execute(query).one()
        return self.keyring.unwrap(row.key_id, bytes(row.wrapped_key), index_key_context(tenant_id))

    def rewrap(self) -> int:
        """Wrap every tenant's index key under the keyring's active key, bound to its
        tenant (key rotation; wraps of older formats are rewritten too)."""
        table = search_index_keys
        changed = 0
        with self.engine.begin() as conn:
            rows = conn.execute(select(table)).all()
            for row in rows:
                wrapped_before = bytes(row.wrapped_key)
                current = self.keyring.wrap_format.is_current(wrapped_before)
                if row.key_id == self.keyring.active_key_id and current:
                    continue
                context = index_key_context(row.tenant_id)
                key = self.keyring.unwrap(row.key_id, wrapped_before, context)
                key_id, wrapped = self.keyring.wrap(key, context)
                # Compare-and-set: a row another rotation moved meanwhile is left alone.
                moved = conn.execute(
                    update(table)
                    .where(
                        table.c.tenant_id == row.tenant_id,
                        table.c.key_id == row.key_id,
                        table.c.wrapped_key == wrapped_before,
                    )
                    .values(key_id=key_id, wrapped_key=wrapped)
                )
                changed += moved.rowcount or 0
        return changed
