"""Wrapped keys are bound to what they protect, against a real PostgreSQL: a wrap
copied from one row of the database into another is refused, and `courier keys
rotate` rewrites wraps of older formats (unbound, or made with the master key itself)
bound and under the master key's wrapping subkey."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from application.batches import BatchProcessor
from application.jobs import MESSAGE_ENCRYPTION, Job
from application.loading import Loader
from application.outgoing import Outgoing
from application.ports import (
    KeyUnwrapError,
    holds_key,
    index_key_context,
    message_key_context,
)
from application.processing import ForeignWrappedKey, Processor
from application.rotation import KeyRotation
from application.sealing import SERVICE_HOLDER
from domain.events import Context
from infrastructure.blindindex import HmacBlindIndex
from infrastructure.crypto import WRAP_PURPOSE, subkey
from infrastructure.eventreader import event_reader
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import load
from interfaces.http.wire import envelope_dict
from interfaces.keyops import rotate_master_keys
from tests.conftest import PG_DSN
from tests.recipient import b64, open_envelope, public_pem

pytestmark = pytest.mark.services

TENANT = "t1"
SECRET = "confidential-5e1d"
MASTER = b"M" * 32


class Nobody:
    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        return set()

    def notify(self, *args: Any) -> dict[str, dict[str, str]]:
        return {}

    def index(self, message: Any) -> None:
        return None


def ctx(user: str, tenant: str = TENANT) -> Context:
    return Context(actor_id=user, tenant_id=tenant)


@pytest.fixture
def container(pg_schema: str) -> Iterator[Container]:
    settings = load(
        {
            "DATABASE_URL": PG_DSN,
            "POSTGRES_SCHEMA": pg_schema,
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": "mk1:" + b64(MASTER),
        }
    )
    built = build(settings, TOOL)
    for user in ("alice", "bob", "mallory"):
        built.messaging.register_key(ctx(user), public_pem(user))
    yield built
    built.stop()


def sql(schema: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def dek_holder(container: Container, message_id: UUID) -> str:
    sealed = container.messaging.get_message(TENANT, message_id).sealed
    assert sealed is not None
    return f"{SERVICE_HOLDER}:{sealed['dekId']}"


def seal_job(message_id: UUID) -> Job:
    return Job(MESSAGE_ENCRYPTION, message_id, "seal", TENANT)


def test_a_data_key_wrap_copied_into_another_message_is_refused(
    container: Container, pg_schema: str
) -> None:
    app = container.messaging
    theirs = app.send_direct(ctx("alice"), "bob", Outgoing(content=SECRET, encrypted=True))
    mine = app.send_direct(ctx("mallory"), "bob", Outgoing(content="hello", encrypted=True))
    victim, target = theirs.message.id, mine.message.id
    # Mallory can write the database but holds no master key: she copies the service's
    # wrap of the other message's data key over the one of a message she takes part in.
    sql(
        pg_schema,
        "UPDATE key_vault SET key_id = v.key_id, wrapped_key = v.wrapped_key "
        "FROM key_vault v WHERE v.message_id = %s AND v.holder = %s "
        "AND key_vault.message_id = %s AND key_vault.holder = %s",
        str(victim),
        dek_holder(container, victim),
        str(target),
        dek_holder(container, target),
    )
    processor = Processor(app, app.crypto, Nobody(), Nobody(), Nobody())
    with pytest.raises(ForeignWrappedKey):
        processor.run(seal_job(target))
    batches = BatchProcessor(processor, Loader(app, event_reader(app.recorder)))
    [result] = batches.run([seal_job(target)])
    assert isinstance(result.error, ForeignWrappedKey)

    rows = sql(
        pg_schema, "SELECT holder_type, holder FROM key_vault WHERE message_id = %s", str(target)
    )
    holders = [holder for (kind, holder) in rows if holds_key(kind)]  # not its search tokens
    assert holders == [dek_holder(container, target)]  # nothing wrapped for mallory
    assert app.get_message(TENANT, target).encryption is None
    # The message whose key was copied is untouched and still seals for its own people.
    processor.run(seal_job(victim))
    assert open_envelope("bob", envelope_dict(app.envelope(ctx("bob"), victim))).decode() == SECRET


def test_a_tenants_index_key_wrap_copied_to_another_tenant_is_refused(
    container: Container, pg_schema: str
) -> None:
    index = container.messaging.crypto.blind_index
    assert isinstance(index, HmacBlindIndex)
    index.tokens("t1", ["word"])
    index.tokens("t2", ["word"])
    sql(
        pg_schema,
        "UPDATE search_index_keys SET key_id = v.key_id, wrapped_key = v.wrapped_key "
        "FROM search_index_keys v WHERE v.tenant_id = 't1' AND search_index_keys.tenant_id = 't2'",
    )
    fresh = HmacBlindIndex(container.engine, container.messaging.crypto.keyring)  # no cache
    assert fresh.tokens("t1", ["word"]) == index.tokens("t1", ["word"])
    with pytest.raises(KeyUnwrapError):
        fresh.tokens("t2", ["word"])


def test_rotate_rewrites_unbound_wraps_bound_and_they_still_open(
    container: Container, pg_schema: str
) -> None:
    app = container.messaging
    sent = app.send_direct(ctx("alice"), "bob", Outgoing(content=SECRET, encrypted=True))
    mid, holder = sent.message.id, dek_holder(container, sent.message.id)
    index = app.crypto.blind_index
    assert isinstance(index, HmacBlindIndex)
    tokens = index.tokens("t1", ["word"])
    # Make both wraps what the previous release wrote: nonce + AES-GCM under the master
    # key with the AAD "courier:dek:<key id>", bound to nothing.
    keyring = app.crypto.keyring
    [(wrapped,)] = sql(pg_schema, "SELECT wrapped_key FROM key_vault WHERE holder = %s", holder)
    data_key = keyring.unwrap("mk1", bytes(wrapped), message_key_context(mid, holder))
    [(wrapped_index,)] = sql(pg_schema, "SELECT wrapped_key FROM search_index_keys")
    index_key = keyring.unwrap("mk1", bytes(wrapped_index), index_key_context("t1"))

    def legacy(key: bytes) -> bytes:
        nonce = b"\x03" * 12
        return nonce + AESGCM(MASTER).encrypt(nonce, key, b"courier:dek:mk1")

    sql(
        pg_schema,
        "UPDATE key_vault SET wrapped_key = %s WHERE holder = %s",
        legacy(data_key),
        holder,
    )
    sql(pg_schema, "UPDATE search_index_keys SET wrapped_key = %s", legacy(index_key))
    # Old wraps are still read until rotated.
    assert HmacBlindIndex(container.engine, keyring).tokens("t1", ["word"]) == tokens

    assert rotate_master_keys(container.settings, 100)

    [(after,)] = sql(pg_schema, "SELECT wrapped_key FROM key_vault WHERE holder = %s", holder)
    [(after_index,)] = sql(pg_schema, "SELECT wrapped_key FROM search_index_keys")
    assert len(bytes(after)) == len(bytes(after_index)) == 61  # the bound format
    assert bytes(after)[:1] == bytes(after_index)[:1] == b"\x03"  # under the subkey
    with pytest.raises(KeyUnwrapError):  # bound: it opens for no other message
        keyring.unwrap("mk1", bytes(after), message_key_context(UUID(int=1), holder))
    assert HmacBlindIndex(container.engine, keyring).tokens("t1", ["word"]) == tokens
    Processor(app, app.crypto, Nobody(), Nobody(), Nobody()).run(seal_job(mid))
    assert open_envelope("bob", envelope_dict(app.envelope(ctx("bob"), mid))).decode() == SECRET


def test_rotate_rewrites_wraps_made_with_the_master_key_itself_under_its_subkey(
    container: Container, pg_schema: str
) -> None:
    app = container.messaging
    sent = app.send_direct(ctx("alice"), "bob", Outgoing(content=SECRET, encrypted=True))
    mid, holder = sent.message.id, dek_holder(container, sent.message.id)
    index = app.crypto.blind_index
    assert isinstance(index, HmacBlindIndex)
    tokens = index.tokens("t1", ["word"])
    keyring = app.crypto.keyring
    context, index_context = message_key_context(mid, holder), index_key_context("t1")
    [(wrapped,)] = sql(pg_schema, "SELECT wrapped_key FROM key_vault WHERE holder = %s", holder)
    [(wrapped_index,)] = sql(pg_schema, "SELECT wrapped_key FROM search_index_keys")
    assert bytes(wrapped)[:1] == bytes(wrapped_index)[:1] == b"\x03"  # new wraps: subkey
    data_key = keyring.unwrap("mk1", bytes(wrapped), context)
    index_key = keyring.unwrap("mk1", bytes(wrapped_index), index_context)

    def v2(key: bytes, bound_to: str) -> bytes:
        """What the previous release wrote: bound, but under the master key itself."""
        nonce = b"\x04" * 12
        aad = b"courier:wrap:v2|mk1|" + bound_to.encode()
        return b"\x02" + nonce + AESGCM(MASTER).encrypt(nonce, key, aad)

    sql(
        pg_schema,
        "UPDATE key_vault SET wrapped_key = %s WHERE holder = %s",
        v2(data_key, context),
        holder,
    )
    sql(pg_schema, "UPDATE search_index_keys SET wrapped_key = %s", v2(index_key, index_context))
    rotation = KeyRotation(keyring, app.crypto.vault)
    assert (rotation.pending(), rotation.outdated()) == (1, 1)
    # Still read as they are until rotated.
    assert HmacBlindIndex(container.engine, keyring).tokens("t1", ["word"]) == tokens

    assert rotate_master_keys(container.settings, 100)

    assert (rotation.pending(), rotation.outdated()) == (0, 0)
    [(after,)] = sql(pg_schema, "SELECT wrapped_key FROM key_vault WHERE holder = %s", holder)
    [(after_index,)] = sql(pg_schema, "SELECT wrapped_key FROM search_index_keys")
    for rewritten, bound_to in ((bytes(after), context), (bytes(after_index), index_context)):
        assert rewritten[:1] == b"\x03" and len(rewritten) == 61
        nonce, body = rewritten[1:13], rewritten[13:]
        aad = b"courier:wrap:v3|mk1|" + bound_to.encode()
        with pytest.raises(InvalidTag):  # no longer under the master key itself
            AESGCM(MASTER).decrypt(nonce, body, aad)
        assert AESGCM(subkey(MASTER, WRAP_PURPOSE)).decrypt(nonce, body, aad) in (
            data_key,
            index_key,
        )
    assert HmacBlindIndex(container.engine, keyring).tokens("t1", ["word"]) == tokens
    Processor(app, app.crypto, Nobody(), Nobody(), Nobody()).run(seal_job(mid))
    assert open_envelope("bob", envelope_dict(app.envelope(ctx("bob"), mid))).decode() == SECRET
