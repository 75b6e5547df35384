"""The `search` view on both stores: full text for plain messages, the blind index for
encrypted ones, visibility, shredding, and a rebuild by replay."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import create_engine, select

from application.outgoing import Outgoing
from application.search import blind_words
from domain.events import Context
from infrastructure import migrate
from infrastructure.blindindex import HmacBlindIndex
from infrastructure.crypto import MasterKeyring, generate_master_key_spec
from infrastructure.runtime.bootstrap import ALL, TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import Settings
from interfaces.replay import replay_projection
from projections.messages import MessageQueriesSQL
from projections.tables import search_documents, search_tokens
from tests.conftest import backend_settings
from tests.e2e.harness import wait_for
from tests.recipient import public_pem

PLAIN = "Flu clinic moved to Room 4 — bring the rota"
SECRET = "Potassium 5.9 for Mr Ávila: recheck at noon"
KEPT = "Sodium 131 for bed 9"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    found: Settings = backend_settings(request, tmp_path)
    return found


@contextmanager
def running(settings: Settings, role: str = ALL) -> Iterator[Container]:
    container = build(settings, role)
    container.start()
    try:
        yield container
    finally:
        container.stop()


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_plain_by_word_encrypted_by_exact_word_for_participants_only(settings: Settings) -> None:
    with running(settings) as container:
        plain, other = _scenario(container)
        kept = container.messaging.send_direct(
            Context("alice", "clinic-a"), "bob", Outgoing(content=KEPT, encrypted=True)
        )
        wait_for(
            lambda: container.queries.search("clinic-a", "bob", "sodium", None, 50),
            30,
            "the kept encrypted message to be findable",
        )
    # The view is a projection: rebuilt from the log (an encrypted message's tokens from
    # the key vault, where the send put them), it answers the same.
    replay_projection(settings, "search")
    with running(settings, TOOL) as rebuilt:
        queries = MessageQueriesSQL(rebuilt.engine, rebuilt.messaging.crypto.blind_index)
        assert ids(queries.search("clinic-a", "bob", "clinic", None, 50)) == [plain]
        assert ids(queries.search("clinic-a", "bob", "potassium", None, 50)) == []
        assert ids(queries.search("clinic-a", "bob", "sodium", None, 50)) == [str(kept.message.id)]
        assert ids(queries.search("clinic-a", "carol", "clinic", None, 50)) == [other]


def _scenario(container: Container) -> tuple[str, str]:
    app = container.messaging
    alice, bob = Context("alice", "clinic-a"), Context("bob", "clinic-a")
    for ctx in (alice, bob):
        app.register_key(ctx, public_pem(ctx.actor_id))
    plain = app.send_direct(alice, "bob", Outgoing(content=PLAIN)).message.id
    secret = app.send_direct(alice, "bob", Outgoing(content=SECRET, encrypted=True)).message.id
    unindexed = app.send_direct(alice, "bob", Outgoing(content="clinic notes", index=False))
    other = app.send_direct(Context("carol", "clinic-a"), "dave", Outgoing(content=PLAIN))
    search = container.queries.search

    def found(user: str, query: str, tenant: str = "clinic-a") -> list[str]:
        return ids(search(tenant, user, query, None, 50))

    wait_for(lambda: found("bob", "potassium"), 30, "the encrypted message to be findable")
    wait_for(lambda: found("bob", "clinic"), 30, "the plain message to be findable")
    wait_for(lambda: found("carol", "clinic"), 30, "carol's own message to be findable")

    assert found("bob", "clinic") == [str(plain)]
    assert found("alice", "CLINICS room") == [str(plain)]  # stemmed, case-folded, all words
    assert found("bob", "potassium") == [str(secret)]
    assert found("bob", "avila RECHECK") == [str(secret)]  # normalised exact words
    assert found("bob", "potass") == []  # no prefixes in a blind index
    assert found("bob", "potassium clinic") == []  # every word, in one message
    assert found("carol", "potassium") == []  # not a participant
    assert found("carol", "clinic") == [str(other.message.id)]
    assert found("bob", "potassium", tenant="clinic-b") == []
    assert found("bob", "notes") == []  # sent with index=false
    assert str(unindexed.message.id) not in found("alice", "clinic")
    conversation = app.get_message("clinic-a", plain).conversation_id
    in_conversation = search("clinic-a", "bob", "clinic", conversation, 50)
    assert ids(in_conversation) == [str(plain)]
    assert search("clinic-a", "bob", "clinic", UUID(int=1), 50) == []

    # Only tokens are kept: not a word of the encrypted message in the view or the log.
    with container.engine.connect() as conn:
        tokens = conn.execute(select(search_tokens.c.token)).scalars().all()
        document = conn.execute(
            select(search_documents.c.document).where(search_documents.c.message_id == str(secret))
        ).scalar()
    assert document is None and len(tokens) == len(blind_words(SECRET))
    assert not set(tokens) & set(blind_words(SECRET))
    stored = b"".join(e.state for e in app.recorder.select_events(secret))
    for word in ("otassium", "recheck", "noon"):
        assert word.encode() not in stored

    # Another tenant's key makes other tokens for the same words.
    index = HmacBlindIndex(container.engine, app.crypto.keyring)
    assert index.tokens("clinic-a", ["noon"]) != index.tokens("clinic-b", ["noon"])

    app.shred(alice, secret, "erasure")
    wait_for(lambda: not found("bob", "potassium"), 30, "the shredded message to be gone")

    return str(plain), str(other.message.id)


def test_index_keys_follow_master_key_rotation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    old, new = generate_master_key_spec(), generate_master_key_spec()
    before = HmacBlindIndex(engine, MasterKeyring.from_spec(old)).tokens("t", ["noon", "bay"])

    rotating = HmacBlindIndex(engine, MasterKeyring.from_spec(f"{new},{old}"))
    assert rotating.rewrap() == 1
    assert rotating.rewrap() == 0  # already under the active key

    after = HmacBlindIndex(engine, MasterKeyring.from_spec(new)).tokens("t", ["bay", "noon"])
    assert after == before and len(after) == 2
    engine.dispose()
