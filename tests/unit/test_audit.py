"""The audit trail's pure parts: the chain and its check, entries, checkpoints, access records."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from application.access import AccessLog
from application.errors import NotFound
from application.messaging import Messaging
from application.outgoing import Outgoing
from application.ports import Crypto
from domain.access import PAGE, Access
from domain.conversation import Conversation
from domain.events import Context
from infrastructure.checkpoints import BadCheckpoint, check_signature, sign
from projections.audit import CONTENT_FIELDS, entry_row
from projections.chain import GENESIS, link, verify
from tests.unit.api.fakes import DictVault, FakeCipher, FakeKeyring


@dataclasses.dataclass(frozen=True)
class Stored:
    id: int
    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


def log_of(count: int) -> list[Stored]:
    aggregate = uuid4()
    return [
        Stored(p * 2, aggregate, p, "courier.message:X", b"state %d" % p) for p in range(1, count)
    ]


def chain_of(log: list[Stored]) -> list[tuple[int, bytes]]:
    links, previous = [], GENESIS
    for n in log:
        previous = link(previous, n)
        links.append((n.id, previous))
    return links


def test_an_untouched_log_verifies() -> None:
    log = log_of(10)
    verdict = verify(log, chain_of(log), log[-1].id)
    assert verdict.ok and verdict.checked == 9 and verdict.first_bad_position is None


def test_every_kind_of_change_is_named_at_its_first_position() -> None:
    log = log_of(10)
    links = chain_of(log)
    head = log[-1].id
    changed = [*log[:3], dataclasses.replace(log[3], state=b"state 4!"), *log[4:]]
    assert verify(changed, links, head).first_bad_position == log[3].id
    deleted = [*log[:3], *log[4:]]
    assert verify(deleted, links, head).first_bad_position == log[3].id
    swapped = [
        *log[:3],
        dataclasses.replace(log[6], id=log[3].id),
        *log[4:6],
        dataclasses.replace(log[3], id=log[6].id),
        *log[7:],
    ]
    verdict = verify(swapped, links, head)
    assert (verdict.ok, verdict.first_bad_position, verdict.checked) == (False, log[3].id, 3)
    inserted = [*log[:3], Stored(log[3].id - 1, uuid4(), 1, "t", b"forged"), *log[3:]]
    assert verify(inserted, links, head).first_bad_position == log[3].id - 1
    truncated = log[:-1]
    assert verify(truncated, links, head).first_bad_position == head
    rewritten_link = [*links[:5], (links[5][0], b"x" * 32), *links[6:]]
    assert verify(log, rewritten_link, head).first_bad_position == log[5].id


def test_checkpoints_catch_a_chain_recomputed_over_a_changed_log() -> None:
    log = log_of(10)
    anchor = dict([chain_of(log)[6]])
    forged = [*log[:2], dataclasses.replace(log[2], topic="courier.message:Y"), *log[3:]]
    recomputed = chain_of(forged)  # consistent with the forged log
    assert verify(forged, recomputed, log[-1].id).ok
    verdict = verify(forged, recomputed, log[-1].id, anchor)
    assert not verdict.ok and verdict.first_bad_position == log[6].id
    assert verify(log, chain_of(log), log[-1].id, anchor).ok
    gone = [*log[:6], *log[7:]]
    assert verify(gone, chain_of(gone), log[-1].id, anchor).first_bad_position == log[6].id


def test_checkpoints_are_signed_and_checked_against_the_trusted_key() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    checkpoint = sign(key, 42, b"h" * 32, datetime(2024, 12, 1, tzinfo=UTC))
    assert check_signature(checkpoint, key.public_key()) == (42, b"h" * 32)
    with pytest.raises(BadCheckpoint):
        check_signature(checkpoint, other.public_key())
    for field, value in (("position", 43), ("hash", "00" * 32), ("signedAt", "2030-01-01")):
        with pytest.raises(BadCheckpoint):
            check_signature({**checkpoint, field: value}, key.public_key())
    with pytest.raises(BadCheckpoint):
        check_signature({"format": "x"}, key.public_key())


def messaging() -> Messaging:
    crypto = Crypto(cipher=FakeCipher(), keyring=FakeKeyring(), vault=DictVault())
    return Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_an_entry_says_who_what_when_where_and_never_holds_content() -> None:
    app = messaging()
    ctx = Context("alice", "t1", source_ip="10.1.2.3", user_agent="tablet/1", correlation_id="r-1")
    sent = app.send_direct(ctx, "bob", Outgoing(content="potassium 6.1"))
    created = next(iter(app.events.get(sent.message.id)))
    row = entry_row(7, created)
    assert row["aggregate_type"] == "Message" and row["type"] == "Created"
    assert (row["actor_id"], row["actor_role"], row["tenant_id"]) == ("alice", "user", "t1")
    assert row["position"] == 7 and row["version"] == 1
    assert row["data"]["context"] == {
        "correlationId": "r-1",
        "sourceIp": "10.1.2.3",
        "userAgent": "tablet/1",
    }
    assert row["data"]["recipientIds"] == ["bob"] and row["data"]["conversationId"]
    assert "potassium" not in repr(row)
    assert not {"content", "sealed", "contentDigest"} & set(row["data"])
    assert {"content", "sealed", "content_digest", "search_tokens"} <= CONTENT_FIELDS


def test_reads_refusals_and_queries_are_one_access_event_each() -> None:
    app = messaging()
    alice, mallory = Context("alice", "t1"), Context("mallory", "t1")
    sent = app.send_direct(alice, "bob", Outgoing(content="x"))
    access = AccessLog(app)
    access.viewed(alice, PAGE, sent.message.conversation_id, [str(sent.message.id)])
    access.viewed(alice, PAGE, sent.message.conversation_id, [])  # an empty page shows nothing
    with pytest.raises(NotFound):
        access.on_message(
            mallory,
            "message.view",
            sent.message.id,
            lambda: app.view_message(mallory, sent.message.id),
        )
    access.audit_queried(Context("ines", "t1"), "events", {"actorId": "bob"}, 3)
    records = [
        e
        for n in app.recorder.select_notifications(start=1, limit=100)
        if isinstance(e := app.mapper.to_domain_event(n), Access.Created)
    ]
    kinds = [type(e).__qualname__ for e in records]
    assert kinds == ["Access.Viewed", "Access.Denied", "Access.AuditQueried"]
    denied = records[1]
    assert isinstance(denied, Access.Denied)
    assert (denied.subject_id, denied.status, denied.meta["actor_id"]) == (
        str(sent.message.id),
        404,
        "mallory",
    )
    assert records[2].meta["actor_role"] == "auditor"


def test_a_legal_hold_is_placed_and_released_once() -> None:
    conversation = Conversation(
        tenant_id="t1", kind="group", participant_ids=["a", "b"], title=None, meta={}
    )
    assert not conversation.on_hold
    assert conversation.place_hold("case 17", {}) and conversation.on_hold
    assert not conversation.place_hold("again", {})
    assert conversation.release_hold("closed", {}) and not conversation.on_hold
    assert not conversation.release_hold("closed", {})
    kinds = [type(e).__name__ for e in conversation.collect_events()]
    assert kinds == ["Started", "LegalHoldPlaced", "LegalHoldReleased"]
