"""The key vault on SQLite and PostgreSQL, and the event store's optional at-rest cipher."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from sqlalchemy import Engine

from application.outgoing import Outgoing
from application.ports import DIGEST_ROW, SERVICE_KEY, USER_KEY, VaultEntry, WrapFormat
from domain.events import Context
from infrastructure.crypto import generate_event_store_key, generate_master_key_spec
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.settings import SettingsError, eventstore_env, load
from infrastructure.vault import SqlKeyVault
from tests.conftest import PG_DSN

M1, M2, M3 = (UUID(int=n) for n in (1, 2, 3))


@pytest.fixture
def engine(both_engines: Engine) -> Engine:
    """The vault's tables on SQLite, then on PostgreSQL."""
    return both_engines


def test_put_get_and_shred(engine: Engine) -> None:
    vault = SqlKeyVault(engine)
    vault.put(
        [
            VaultEntry(M1, "service:d1", "k1", b"s" * 60, SERVICE_KEY),
            VaultEntry(M1, "bob", "k_bob", b"b" * 512, USER_KEY),
            VaultEntry(M1, "digest:r", "hmac", b"h", DIGEST_ROW),
            VaultEntry(M2, "bob", "k_bob", b"c" * 512, USER_KEY),
        ]
    )
    assert vault.get(M1, USER_KEY, "bob") == VaultEntry(M1, "bob", "k_bob", b"b" * 512, USER_KEY)
    vault.put([VaultEntry(M1, "bob", "k_bob2", b"d" * 512, USER_KEY)])  # the job ran twice
    assert vault.get(M1, USER_KEY, "bob") == VaultEntry(M1, "bob", "k_bob2", b"d" * 512, USER_KEY)
    assert vault.shred(M1) == 2  # the keys, not the digest
    assert vault.get(M1, USER_KEY, "bob") is None
    assert vault.get(M1, SERVICE_KEY, "service:d1") is None
    assert vault.get(M1, DIGEST_ROW, "digest:r") is None
    assert vault.get(M2, USER_KEY, "bob") is not None
    assert vault.shred(M1) == 0


def test_a_user_named_like_a_service_row_is_another_row(engine: Engine) -> None:
    vault = SqlKeyVault(engine)
    service = VaultEntry(M1, "service:d1", "mk1", b"s" * 61, SERVICE_KEY)
    vault.put([service])
    # No user row of that name: the service's row does not answer for one.
    assert vault.get(M1, USER_KEY, "service:d1") is None
    assert vault.get_many(USER_KEY, [(M1, "service:d1")]) == {}
    user = VaultEntry(M1, "service:d1", "k_user", b"u" * 512, USER_KEY)
    vault.put([user])  # a user's wrapped key, written as the encryption job writes it
    assert vault.get(M1, SERVICE_KEY, "service:d1") == service  # not overwritten
    assert vault.get(M1, USER_KEY, "service:d1") == user
    assert vault.get_many(SERVICE_KEY, [(M1, "service:d1")]) == {(M1, "service:d1"): service}
    assert vault.count_by_key_id(SERVICE_KEY) == {"mk1": 1}
    stale = vault.entries_to_rewrap(SERVICE_KEY, "mk2", WrapFormat(b"\x03", 60), None, 9)
    assert [e.holder_type for e in stale] == [SERVICE_KEY]
    assert vault.shred(M1) == 2


V3 = b"\x03"
CURRENT = WrapFormat(V3, 60)


def test_service_entries_page_by_key_and_rewrap_only_what_is_unchanged(engine: Engine) -> None:
    vault = SqlKeyVault(engine)
    vault.put(
        [
            VaultEntry(M1, "service:a", "old", V3 + b"1" * 60, SERVICE_KEY),
            VaultEntry(M1, "service:b", "new", V3 + b"2" * 60, SERVICE_KEY),
            VaultEntry(M2, "service:c", "old", V3 + b"3" * 60, SERVICE_KEY),
            VaultEntry(M3, "service:d", "older", V3 + b"4" * 60, SERVICE_KEY),
            VaultEntry(M3, "service:e", "old", V3 + b"5" * 60, USER_KEY),  # a user's
            VaultEntry(M3, "bob", "old", b"6" * 60, USER_KEY),
        ]
    )
    assert vault.count_by_key_id(SERVICE_KEY) == {"old": 2, "new": 1, "older": 1}
    first = vault.entries_to_rewrap(SERVICE_KEY, "new", CURRENT, None, 2)
    assert [(e.message_id, e.holder) for e in first] == [(M1, "service:a"), (M2, "service:c")]
    rest = vault.entries_to_rewrap(SERVICE_KEY, "new", CURRENT, (str(M2), "service:c"), 2)
    assert [(e.message_id, e.holder) for e in rest] == [(M3, "service:d")]
    assert vault.count_to_rewrap(SERVICE_KEY, "new", CURRENT) == 3
    assert vault.count_outdated(SERVICE_KEY, CURRENT) == 0

    # Wraps of older formats are rewritten even under the active key: v2 (another version
    # byte) and the unbound one (60 bytes, whatever its first byte).
    vault.put(
        [
            VaultEntry(M1, "service:f", "new", b"\x02" + b"7" * 60, SERVICE_KEY),
            VaultEntry(M2, "service:g", "new", V3 + b"8" * 59, SERVICE_KEY),
        ]
    )
    older = vault.entries_to_rewrap(SERVICE_KEY, "new", CURRENT, None, 10)
    assert [(e.message_id, e.holder) for e in older] == [
        (M1, "service:a"),
        (M1, "service:f"),
        (M2, "service:c"),
        (M2, "service:g"),
        (M3, "service:d"),
    ]
    assert vault.count_to_rewrap(SERVICE_KEY, "new", CURRENT) == 5
    assert vault.count_outdated(SERVICE_KEY, CURRENT) == 2

    assert vault.rewrap(first[0], "new", V3 + b"9" * 60)
    assert vault.get(M1, SERVICE_KEY, "service:a") == VaultEntry(
        M1, "service:a", "new", V3 + b"9" * 60, SERVICE_KEY
    )
    assert not vault.rewrap(first[0], "new", V3 + b"0" * 60)  # no longer as it was read
    vault.shred(M2)
    assert not vault.rewrap(first[1], "new", V3 + b"7" * 60)  # shredded keys stay destroyed
    assert vault.get(M2, SERVICE_KEY, "service:c") is None
    assert vault.count_by_key_id(SERVICE_KEY) == {"new": 3, "older": 1}
    assert vault.count_outdated(SERVICE_KEY, CURRENT) == 1


@pytest.mark.services
def test_the_at_rest_cipher_keeps_event_data_unreadable_in_postgres(pg_schema: str) -> None:
    marker = "at-rest-marker-5b1e"
    settings = load(
        {
            "DATABASE_URL": PG_DSN,
            "POSTGRES_SCHEMA": pg_schema,
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
            "EVENT_STORE_CIPHER_KEY": generate_event_store_key(),
        }
    )
    container = build(settings, TOOL)
    try:
        alice = Context(actor_id="alice", tenant_id="t1")
        sent = container.messaging.send_direct(alice, "bob", Outgoing(content=marker))
        again = container.messaging.get_message("t1", sent.message.id)
        assert again.content == marker
    finally:
        container.stop()
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(f"SELECT state FROM {pg_schema}.messaging_events").fetchall()
    assert rows
    assert not any(marker.encode() in bytes(state) for (state,) in rows)
    assert not any(b"alice" in bytes(state) for (state,) in rows)


def test_a_malformed_at_rest_key_is_a_settings_error(tmp_path: Path) -> None:
    env = {"COURIER_DATA_DIR": str(tmp_path)}
    with pytest.raises(SettingsError, match="EVENT_STORE_CIPHER_KEY"):
        load({**env, "EVENT_STORE_CIPHER_KEY": "c2hvcnQ="})
    assert "CIPHER_TOPIC" not in eventstore_env(load(env))


def test_the_embedded_read_database_overwrites_what_it_deletes(tmp_path: Path) -> None:
    from sqlalchemy import text

    from infrastructure.runtime.stores import make_engine

    settings = load(
        {
            "COURIER_DATA_DIR": str(tmp_path),
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": generate_master_key_spec(),
        }
    )
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
    finally:
        engine.dispose()
