"""After `courier shred`, nothing derived from a message's content is left anywhere.

An encrypted, indexed message sent with a clientMessageId leaves two fingerprints of its
plaintext besides the ciphertext: the digest that tells a repeated send from a different
one, and the blind-index tokens of its words. Both live in the key vault, never in the
event log, so shredding destroys them with the keys: afterwards neither they nor the
words are in the message's decoded events, the raw event store, any read or search
table, or Redis. Idempotent retries keep working until then.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import redis
from sqlalchemy import Engine, select, text

from application.ports import DIGEST_HOLDER, SEARCH_HOLDER, Crypto
from infrastructure.crypto import AesGcmCipher, MasterKeyring
from infrastructure.runtime.bootstrap import load_settings
from infrastructure.runtime.stores import make_engine, open_messaging
from infrastructure.settings import load
from infrastructure.tables import key_vault
from infrastructure.vault import SqlKeyVault
from migrations.schema import metadata
from projections.search import FTS_TABLE
from tests.e2e.harness import Runtime, auth, wait_for
from tests.e2e.sealing import courier, register_keys

pytestmark = pytest.mark.e2e

CONTENT = "Zanzibar quokka biopsy results"
WORDS = ("zanzibar", "quokka", "biopsy", "results")


def send(runtime: Runtime, content: str) -> Any:
    return runtime.http.post(
        "/api/messages/direct",
        json={
            "recipientId": "bob",
            "content": content,
            "encrypted": True,
            "clientMessageId": "lab-result-17",
        },
        headers=auth("alice"),
    )


def vault(engine: Engine, message_id: str) -> dict[str, bytes]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(key_vault.c.holder, key_vault.c.wrapped_key).where(
                key_vault.c.message_id == message_id
            )
        ).all()
    return {row.holder: bytes(row.wrapped_key) for row in rows}


def read_side_text(engine: Engine) -> str:
    """Every row of every read table (and SQLite's full-text table), as text."""
    parts = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            parts.extend(repr(tuple(row)) for row in conn.execute(select(table)))
        if engine.dialect.name == "sqlite":
            fts = conn.execute(text(f"SELECT * FROM {FTS_TABLE}"))
            parts.extend(repr(tuple(row)) for row in fts)
    return "\n".join(parts)


def redis_text(url: str) -> str:
    """Every key and value of the runtime's Redis database, as text."""
    client = redis.Redis.from_url(url)
    parts: list[Any] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key)
            value: Any = {
                b"string": lambda k: client.get(k),
                b"list": lambda k: client.lrange(k, 0, -1),
                b"hash": lambda k: client.hgetall(k),
                b"set": lambda k: client.smembers(k),
                b"zset": lambda k: client.zrange(k, 0, -1),
            }.get(kind, lambda k: b"")(key)
            parts.extend([key, value])
    finally:
        client.close()
    return repr(parts)


@pytest.fixture
def engine(runtime: Runtime) -> Iterator[Engine]:
    made = make_engine(load(runtime.env))
    yield made
    made.dispose()


def test_after_shredding_nothing_derived_from_the_content_remains(
    runtime: Runtime, engine: Engine
) -> None:
    register_keys(runtime, "alice", "bob")
    first = send(runtime, CONTENT)
    assert first.status_code == 202, first.text
    message_id = first.json()["message"]["id"]
    runtime.wait_done("alice", message_id)

    # Idempotent retries: the same send answers the first; other content is refused.
    again = send(runtime, CONTENT)
    assert again.status_code == 200 and again.json()["message"]["id"] == message_id
    other = send(runtime, "something else entirely")
    assert other.status_code == 409, other.text

    # Findable by its words while it lives: the search view takes its tokens from the vault.
    found = runtime.http.get("/api/search", params={"q": "quokka"}, headers=auth("bob"))
    assert [m["id"] for m in found.json()["items"]] == [message_id]

    rows = vault(engine, message_id)
    [digest] = [v.decode() for h, v in rows.items() if h.startswith(DIGEST_HOLDER)]
    [tokens] = [v.decode().split("\n") for h, v in rows.items() if h.startswith(SEARCH_HOLDER)]
    assert len(digest) == 64 and len(tokens) == len(WORDS)
    fingerprints = [digest, *tokens, *WORDS, *(w.capitalize() for w in WORDS)]
    assert any(t in read_side_text(engine) for t in tokens)  # the search view holds them now

    done = courier(runtime, "shred", message_id, "--tenant", "t1", "--reason", "erasure")
    assert done.returncode == 0, done.stderr
    # The service's, alice's and bob's keys; the digest and the tokens are not counted.
    assert "3 wrapped key(s) destroyed" in done.stdout
    assert vault(engine, message_id) == {}

    def left_in(where: str, haystack: str) -> list[str]:
        return [f"{f!r} in {where}" for f in fingerprints if f in haystack]

    # Events: each of the message's events decoded, and the raw store.
    settings = load_settings(runtime.env)  # the embedded default's keys are in its data dir
    keyring = MasterKeyring.from_spec(settings.master_key_spec())
    app = open_messaging(Crypto(AesGcmCipher(), keyring, SqlKeyVault(engine)), settings)
    try:
        events = list(app.events.get(UUID(message_id)))
        decoded = json.dumps([e.__dict__ for e in events], default=str)
        raw = b"".join(e.state for e in app.recorder.select_events(UUID(message_id)))
    finally:
        app.close()
    assert any(type(e).__name__ == "Shredded" for e in events)
    leftovers = left_in("the decoded events", decoded)
    leftovers += left_in("the stored events", raw.decode("utf-8", "replace"))

    # Read and search tables: the search view dropped the tokens on Shredded.
    def read_side_clean() -> bool:
        return not left_in("the read side", read_side_text(engine))

    wait_for(read_side_clean, 30, "the search view to forget the shredded message")
    if "REDIS_URL" in runtime.env:
        leftovers += left_in("Redis", redis_text(runtime.env["REDIS_URL"]))
    assert leftovers == []

    # A retry after shredding cannot be matched any more: refused, not answered 200.
    late = send(runtime, CONTENT)
    assert late.status_code == 409 and "shredded" in late.json()["error"]["message"]
