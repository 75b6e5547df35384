"""The command path of a send: what one save holds, the async path, views as access
records, the group commit's futures, remembered tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from pydantic import SecretStr

from application.access import AccessLog
from application.errors import MissingKeys, NotFound
from application.messaging import Messaging
from application.outgoing import Outgoing
from application.ports import Crypto, VaultEntry
from domain.access import MESSAGE, Access
from domain.conversation import DIRECT, GROUP, Conversation, direct_conversation_id
from domain.events import Context
from domain.message import Message
from infrastructure.groupcommit import GroupCommitter
from interfaces.http import auth
from interfaces.http.auth import AuthError, decode_token, mint_token
from tests.unit.api.fakes import DictVault, FakeCipher, FakeKeyring, make_settings

ALICE = Context("alice", "t1")


class Saves:
    """Every batch of events the application stores, as stored."""

    def __init__(self, app: Messaging) -> None:
        self.app = app
        self.batches: list[list[str]] = []

    def put(self, events: Sequence[Any]) -> list[Any]:
        self.batches.append([type(e).__qualname__ for e in events])
        return list(self.app.events.put(events))


def messaging() -> tuple[Messaging, Saves]:
    crypto = Crypto(cipher=FakeCipher(), keyring=FakeKeyring(), vault=DictVault())
    app = Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    saves = Saves(app)
    app.record_with(saves.put)
    return app, saves


def test_a_first_direct_send_starts_its_conversation_in_the_same_save() -> None:
    app, saves = messaging()
    first = app.send_direct(ALICE, "bob", Outgoing(content="one"))
    second = app.send_direct(Context("bob", "t1"), "alice", Outgoing(content="two"))
    assert saves.batches == [["Conversation.Started", "Message.Created"], ["Message.Created"]]
    cid = direct_conversation_id("t1", "alice", "bob")
    assert first.message.conversation_id == second.message.conversation_id == cid
    conversation = app.repository.get(cid)
    assert isinstance(conversation, Conversation)
    assert (conversation.kind, conversation.participant_ids) == (DIRECT, ["alice", "bob"])


def test_a_direct_conversation_started_elsewhere_is_not_started_again() -> None:
    app, saves = messaging()
    app.start_conversation(Context("bob", "t1"), DIRECT, ["alice"], None)
    sent = app.send_direct(ALICE, "bob", Outgoing(content="hi"))
    app.send_direct(ALICE, "bob", Outgoing(content="again"))
    # The combined save conflicts on the conversation; the message goes alone, and the
    # conversation is known from then on.
    assert saves.batches[1:] == [
        ["Conversation.Started", "Message.Created"],
        ["Message.Created"],
        ["Message.Created"],
    ]
    assert app.repository.get(sent.message.id).version == 1
    assert app.repository.get(sent.message.conversation_id).version == 1


def test_a_repeated_client_message_id_answers_the_first_send() -> None:
    app, _ = messaging()
    outgoing = Outgoing(content="dose", client_message_id="c-1")
    first = app.send_direct(ALICE, "bob", outgoing)
    again = app.send_direct(ALICE, "bob", outgoing)
    assert (first.created, again.created) == (True, False)
    assert again.message.id == first.message.id


def access_records(app: Messaging) -> list[Access.Viewed]:
    return [
        e
        for n in app.recorder.select_notifications(start=1, limit=100)
        if isinstance(e := app.mapper.to_domain_event(n), Access.Viewed)
    ]


def test_a_view_is_an_access_record_and_leaves_the_message_alone() -> None:
    app, saves = messaging()
    sent = app.send_direct(ALICE, "bob", Outgoing(content="x"))
    bob = Context("bob", "t1")
    assert app.view_message(bob, sent.message.id).id == sent.message.id
    assert app.view_message(bob, sent.message.id).id == sent.message.id
    assert app.repository.get(sent.message.id).version == 1
    assert saves.batches[1:] == [["Access.Viewed"], ["Access.Viewed"]]
    [first, _] = access_records(app)
    assert (first.what, first.message_ids, first.conversation_id) == (
        MESSAGE,
        [str(sent.message.id)],
        None,
    )
    assert first.meta["actor_id"] == "bob"


# ---- the async path -------------------------------------------------------------------


class AsyncVault(DictVault):
    async def put_async(self, entries: list[VaultEntry]) -> None:
        self.put(entries)


def test_a_send_on_the_event_loop_awaits_the_group_commit() -> None:
    app, saves = messaging()
    committer = GroupCommitter(saves.put)
    vault = AsyncVault()
    app.record_async_with(committer.submit_async, vault.put_async)
    saved: list[int] = []
    app.on_saved(saved.append)

    async def send_all() -> list[Message]:
        people = [f"u{i}" for i in range(20)]
        assert not app.direct_needs_thread(ALICE, people[0], Outgoing(content="x"))
        results = await asyncio.gather(
            *(app.send_direct_async(ALICE, p, Outgoing(content=p)) for p in people)
        )
        deadline = time.monotonic() + 5
        while not saved and time.monotonic() < deadline:  # told within milliseconds
            await asyncio.sleep(0.001)
        return [r.message for r in results]

    try:
        messages = asyncio.run(send_all())
    finally:
        committer.close()
    assert len({m.id for m in messages}) == 20
    for message in messages:
        stored = app.repository.get(message.id)
        assert isinstance(stored, Message) and stored.content == message.content
        assert isinstance(app.repository.get(message.conversation_id), Conversation)
    assert sum(len(b) for b in saves.batches) == 40  # one conversation and one message each
    assert saved  # listeners hear of the saves, as on the threaded path
    assert saved[-1] == max(saved)  # of the newest position


def test_a_send_that_must_read_first_is_left_to_a_thread() -> None:
    app, saves = messaging()
    committer = GroupCommitter(saves.put)
    app.record_async_with(committer.submit_async, AsyncVault().put_async)
    assert app.direct_needs_thread(ALICE, "bob", Outgoing(content="x", client_message_id="c"))
    assert app.direct_needs_thread(ALICE, "bob", Outgoing(content="x", encrypted=True))
    with pytest.raises(RuntimeError):
        asyncio.run(app.send_direct_async(ALICE, "bob", Outgoing(content="x", encrypted=True)))
    committer.close()


def test_futures_of_a_conflicting_batch_get_each_their_own_outcome() -> None:
    stored: list[list[str]] = []

    def put(items: Sequence[Any]) -> list[Any]:
        if "clash" in items and len(items) > 1:
            raise IntegrityError("batch")
        if list(items) == ["clash"]:
            raise IntegrityError("alone")
        stored.append(list(items))
        return [f"r-{i}" for i in items]

    committer = GroupCommitter(put)

    async def submit() -> list[Any]:
        futures = [committer.submit_async(items) for items in (["a"], ["clash"], ["b", "c"])]
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        a, clash, bc = asyncio.run(submit())
    finally:
        committer.close()
    assert a == ["r-a"] and bc == ["r-b", "r-c"]
    assert isinstance(clash, IntegrityError)


def test_a_batch_that_conflicts_is_stored_in_quarters_not_command_by_command() -> None:
    calls: list[list[str]] = []

    def put(items: Sequence[Any]) -> list[Any]:
        calls.append(list(items))
        if "clash" in items:
            raise IntegrityError("conflict")
        return [f"r-{i}" for i in items]

    committer = GroupCommitter(put)
    names = [f"c{i}" for i in range(15)] + ["clash"]

    async def submit() -> list[Any]:
        futures = [committer.submit_async([name]) for name in names]
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        *others, clash = asyncio.run(submit())
    finally:
        committer.close()
    assert others == [[f"r-c{i}"] for i in range(15)]
    assert isinstance(clash, IntegrityError)
    # The batch, its four quarters, then the four commands of the quarter that conflicts:
    # nine transactions where storing each command alone took seventeen.
    assert len(calls) == 9
    assert committer.conflicts == 1


def test_sends_to_a_pair_on_the_loop_start_its_conversation_once() -> None:
    app, saves, _, committers = async_messaging()

    async def send_all() -> list[Any]:
        return await asyncio.gather(
            app.send_direct_async(ALICE, "bob", Outgoing(content="one")),
            app.send_direct_async(Context("bob", "t1"), "alice", Outgoing(content="two")),
            app.send_direct_async(ALICE, "bob", Outgoing(content="three")),
        )

    try:
        sent = asyncio.run(send_all())
    finally:
        for committer in committers:
            committer.close()
    cid = direct_conversation_id("t1", "alice", "bob")
    assert {r.message.conversation_id for r in sent} == {cid}
    # Started in one save only: the others waited for it instead of making their save
    # conflict (and every command of it then be stored again).
    assert sum(batch.count("Conversation.Started") for batch in saves.batches) == 1
    assert sum(batch.count("Message.Created") for batch in saves.batches) == 3


# ---- tokens ----------------------------------------------------------------------------


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    token = mint_token(settings, "kai", "t1", ["user"], 60)
    principal = decode_token(token, settings, correlation_id="r-1")
    again = decode_token(token, settings, correlation_id="r-2", source_ip="10.0.0.9")
    assert again.user_id == principal.user_id == "kai"
    assert (again.context.correlation_id, again.context.source_ip) == ("r-2", "10.0.0.9")
    later = time.time() + 60 + settings.limits.jwt_leeway + 1
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(AuthError, match="expired"):
        decode_token(token, settings)


def test_a_token_is_remembered_only_for_the_key_that_verified_it() -> None:
    settings = make_settings()
    token = mint_token(settings, "kai", "t1", ["user"], 60)
    decode_token(token, settings)
    other = make_settings(jwt_secret=SecretStr("another-secret-0123456789abcdef-0123"))
    with pytest.raises(AuthError):
        decode_token(token, other)


class Reads:
    """The batched reader's part: aggregates by id, None where there is none."""

    def __init__(self, app: Messaging) -> None:
        self.app = app
        self.asked: list[list[UUID]] = []

    def get_many(self, ids: Sequence[Any]) -> list[Any]:
        self.asked.append(list(ids))
        found = []
        for i in ids:
            try:
                found.append(self.app.repository.get(i))
            except AggregateNotFoundError:
                found.append(None)
        return found


def async_messaging() -> tuple[Messaging, Saves, Reads, list[GroupCommitter]]:
    app, saves = messaging()
    reads = Reads(app)
    writer, reader = GroupCommitter(saves.put), GroupCommitter(reads.get_many)
    app.record_async_with(writer.submit_async, AsyncVault().put_async)
    app.read_async_with(reader.submit_async)
    return app, saves, reads, [writer, reader]


def test_group_sends_on_the_event_loop_read_their_conversation_in_one_batch() -> None:
    app, saves, reads, committers = async_messaging()
    room = app.start_conversation(ALICE, GROUP, ["bob", "carol"], "ward 4")
    outgoing = Outgoing(content="rounds at 9")
    assert not app.group_needs_thread(outgoing)
    assert app.group_needs_thread(Outgoing(content="x", client_message_id="c-1"))

    async def send_all() -> list[Any]:
        return await asyncio.gather(
            *(app.send_group_async(ALICE, room.id, outgoing) for _ in range(10)),
            app.send_group_async(Context("mallory", "t1"), room.id, outgoing),
            return_exceptions=True,
        )

    try:
        *sent, refused = asyncio.run(send_all())
    finally:
        for committer in committers:
            committer.close()
    assert isinstance(refused, NotFound)
    assert all(r.message.recipient_ids == ["bob", "carol"] for r in sent)
    assert reads.asked == [[room.id] * 11]  # one batch for every send of the turn
    assert sum(batch.count("Message.Created") for batch in saves.batches) == 10


def test_an_encrypted_send_on_the_loop_names_whoever_has_no_key() -> None:
    app, _, reads, committers = async_messaging()
    app.register_key(Context("bob", "t1"), "-----BEGIN PUBLIC KEY----- bob")
    outgoing = Outgoing(content="x", encrypted=True)
    assert not app.direct_needs_thread(ALICE, "bob", outgoing)
    try:
        with pytest.raises(MissingKeys, match="alice"):
            asyncio.run(app.send_direct_async(ALICE, "bob", outgoing))
        app.register_key(ALICE, "-----BEGIN PUBLIC KEY----- alice")
        sent = asyncio.run(app.send_direct_async(ALICE, "bob", outgoing))
        again = asyncio.run(app.send_direct_async(ALICE, "bob", outgoing))
    finally:
        for committer in committers:
            committer.close()
    assert sent.message.encrypted and again.message.encrypted
    assert len(reads.asked) == 2  # key holders are read until known, then remembered


def test_a_view_on_the_event_loop_is_an_access_record_and_a_refusal_is_recorded() -> None:
    app, saves, _, committers = async_messaging()
    sent = app.send_direct(ALICE, "bob", Outgoing(content="x"))
    access = AccessLog(app)
    assert app.reads_async

    async def views() -> list[Any]:
        return await asyncio.gather(
            app.view_message_async(Context("bob", "t1"), sent.message.id),
            access.on_message_async(
                Context("mallory", "t1"),
                "message.view",
                sent.message.id,
                lambda: app.view_message_async(Context("mallory", "t1"), sent.message.id),
            ),
            return_exceptions=True,
        )

    try:
        seen, refused = asyncio.run(views())
    finally:
        for committer in committers:
            committer.close()
    assert isinstance(seen, Message) and seen.id == sent.message.id
    assert isinstance(refused, NotFound)
    assert app.repository.get(sent.message.id).version == 1
    assert sorted(e for batch in saves.batches[1:] for e in batch) == [
        "Access.Denied",
        "Access.Viewed",
    ]


def test_an_idempotent_send_keeps_its_digest_in_the_vault_not_in_the_log() -> None:
    from application.errors import Conflict
    from application.messaging import Messaging
    from application.outgoing import Outgoing
    from application.ports import DIGEST_HOLDER, DIGEST_REF, DIGEST_ROW, Crypto
    from domain.events import Context
    from domain.message import Message
    from infrastructure.crypto import AesGcmCipher, MasterKeyring
    from tests.unit.test_encryption import KEY_A, MemoryVault

    vault = MemoryVault()
    app = Messaging(
        crypto=Crypto(AesGcmCipher(), MasterKeyring.from_spec(KEY_A), vault),
        env={"PERSISTENCE_MODULE": "eventsourcing.popo"},
    )
    alice = Context(actor_id="alice", tenant_id="t")
    plain = [app.send_direct(alice, "bob", Outgoing(content="result: positive")) for _ in "ab"]
    keyed = app.send_direct(
        alice, "bob", Outgoing(content="result: positive", client_message_id="c1")
    )
    digest = app._digest("direct:bob", Outgoing(content="result: positive", client_message_id="c1"))

    def reference(message_id: object) -> str:
        created = next(iter(app.events.get(message_id)))  # type: ignore[arg-type]
        assert isinstance(created, Message.Created)
        return created.content_digest

    assert [reference(s.message.id) for s in plain] == ["", ""]  # identical sends: not linkable
    # The plain sends wrote nothing to the vault: only the idempotent one did.
    assert {message_id for message_id, _, _ in vault.rows} == {str(keyed.message.id)}
    stored = reference(keyed.message.id)
    assert stored.startswith(DIGEST_REF) and digest not in stored
    holder = DIGEST_HOLDER + stored.removeprefix(DIGEST_REF)
    assert vault.rows[(str(keyed.message.id), DIGEST_ROW, holder)].wrapped_key == digest.encode()
    logged = b"".join(e.state for e in app.recorder.select_events(keyed.message.id))
    assert digest.encode() not in logged

    again = app.send_direct(
        alice, "bob", Outgoing(content="result: positive", client_message_id="c1")
    )
    assert again.message.id == keyed.message.id and not again.created
    with pytest.raises(Conflict, match="different message"):
        app.send_direct(alice, "bob", Outgoing(content="result: negative", client_message_id="c1"))
    vault.shred(keyed.message.id)  # what shredding does to the vault
    with pytest.raises(Conflict, match="shredded"):
        app.send_direct(alice, "bob", Outgoing(content="result: positive", client_message_id="c1"))
    app.close()
