"""The Message and Conversation aggregates: their rules and the events they record."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from domain.conversation import (
    DIRECT,
    GROUP,
    Conversation,
    DirectIsFixed,
    NotAParticipant,
    direct_conversation_id,
)
from domain.message import (
    ACCEPTED,
    DELIVERED,
    DELIVERING,
    ENCRYPTED,
    ENCRYPTING,
    FAILED,
    Message,
    NotARecipient,
    batches_of,
    message_id_for,
)
from tests.unit.factories import META, TENANT, new_message, people


def deliver_all(message: Message, meta: dict[str, str] = META) -> None:
    for key, batch in zip(message.batch_keys(), message.batches(), strict=True):
        assert message.deliver(key, online=batch[:1], offline=batch[1:], meta=meta)


def event_names(message: Message) -> list[str]:
    return [type(event).__name__ for event in message.collect_events()]


# ---- batches -------------------------------------------------------------------------


def test_120_recipients_make_three_batches_of_50_50_20() -> None:
    message = new_message(people(120))

    assert [len(batch) for batch in message.batches()] == [50, 50, 20]
    assert message.batch_keys() == ["0", "1", "2"]
    assert [u for batch in message.batches() for u in batch] == people(120)


@pytest.mark.parametrize(("n", "sizes"), [(1, [1]), (50, [50]), (51, [50, 1]), (100, [50, 50])])
def test_batch_boundaries(n: int, sizes: list[int]) -> None:
    assert [len(batch) for batch in batches_of(people(n))] == sizes


def test_message_id_for_is_deterministic_and_scoped() -> None:
    mid = message_id_for(TENANT, "alice", "c-42")

    assert mid == message_id_for(TENANT, "alice", "c-42")
    assert mid != message_id_for(TENANT, "bob", "c-42")
    assert mid != message_id_for("other", "alice", "c-42")
    assert isinstance(mid, UUID)


# ---- status --------------------------------------------------------------------------


def test_plain_message_goes_accepted_delivering_delivered() -> None:
    message = new_message(people(120))
    assert message.status == ACCEPTED

    assert message.deliver("0", online=[], offline=message.batches()[0], meta=META)
    assert message.status == DELIVERING
    assert not message.is_delivered
    assert message.delivered_count == 50

    assert message.deliver("1", online=message.batches()[1], offline=[], meta=META)
    assert message.status == DELIVERING
    assert message.deliver("2", online=[], offline=message.batches()[2], meta=META)
    assert message.status == DELIVERED
    assert message.is_delivered
    assert message.delivered_count == 120
    assert len(message.online) + len(message.offline) == 120


def test_encrypted_message_goes_encrypting_encrypted_delivered() -> None:
    message = new_message(["bob"], encrypted=True)
    assert message.status == ENCRYPTING
    assert not message.ready_for_delivery
    message.queue_encryption(meta=META)
    assert message.encryption_queued
    assert message.status == ENCRYPTING

    assert message.record_encryption({"iv": "x"}, "v1", meta=META)
    assert message.status == ENCRYPTED
    assert message.ready_for_delivery
    assert message.encryption == {"iv": "x"}

    assert message.deliver("0", online=["bob"], offline=[], meta=META)
    assert message.status == DELIVERED


def test_record_encryption_is_idempotent() -> None:
    message = new_message(["bob"], encrypted=True)
    assert message.record_encryption({"iv": "x"}, "v1", meta=META)
    message.collect_events()

    assert message.record_encryption({"iv": "y"}, "v1", meta=META) is False
    assert message.collect_events() == []
    assert message.encryption == {"iv": "x"}


# ---- idempotence ---------------------------------------------------------------------


def test_delivering_a_batch_twice_returns_false_and_records_nothing() -> None:
    message = new_message(people(60))
    assert message.deliver("0", online=[], offline=message.batches()[0], meta=META)
    assert event_names(message) == ["Created", "Delivered"]

    assert message.deliver("0", online=message.batches()[0], offline=[], meta=META) is False
    assert message.collect_events() == []
    assert message.online == []  # the second call changed nothing
    assert message.delivered_count == 50


def test_mark_notified_twice_returns_false_and_records_nothing() -> None:
    message = new_message(["bob"])
    deliver_all(message)
    assert message.mark_notified("0", {}, meta=META)
    message.collect_events()

    assert message.mark_notified("0", {}, meta=META) is False
    assert message.collect_events() == []


def test_mark_indexed_twice_returns_false() -> None:
    message = new_message(["bob"])
    assert message.mark_indexed(meta=META)
    assert message.indexed
    message.collect_events()

    assert message.mark_indexed(meta=META) is False
    assert message.collect_events() == []


# ---- notification --------------------------------------------------------------------


def test_notified_only_when_every_batch_is_notified() -> None:
    message = new_message(people(120))
    deliver_all(message)

    assert message.mark_notified("0", {"u001": {"channel": "push"}}, meta=META)
    assert message.mark_notified("1", {}, meta=META)
    assert not message.is_notified
    assert message.mark_notified("2", {}, meta=META)
    assert message.is_notified


def test_not_notified_before_every_batch_is_delivered() -> None:
    message = new_message(people(60))
    assert message.deliver("0", online=[], offline=message.batches()[0], meta=META)
    assert message.mark_notified("0", {}, meta=META)

    assert not message.is_notified


# ---- reading -------------------------------------------------------------------------


def test_a_recipient_marks_read_once() -> None:
    message = new_message(["bob", "carol"])

    assert message.mark_read("bob", meta=META)
    assert message.mark_read("bob", meta=META) is False
    assert message.read_by == ["bob"]


@pytest.mark.parametrize("reader", ["mallory", "alice"])
def test_mark_read_by_a_non_recipient_raises(reader: str) -> None:
    message = new_message(["bob"])
    message.collect_events()

    with pytest.raises(NotARecipient):
        message.mark_read(reader, meta=META)
    assert message.collect_events() == []
    assert message.read_by == []


def test_may_see_only_sender_and_recipients() -> None:
    message = new_message(["bob"])

    assert message.may_see("alice")
    assert message.may_see("bob")
    assert not message.may_see("mallory")
    assert message.participants() == ["alice", "bob"]


# ---- failures ------------------------------------------------------------------------


def test_failure_then_successful_delivery_clears_failed_status() -> None:
    message = new_message(["bob"])
    job_id = f"MESSAGE_DELIVERY:{message.id}:b0"

    message.fail("MESSAGE_DELIVERY", job_id, 5, "TimeoutError", meta=META)
    assert message.status == FAILED
    assert message.failures == [
        {"queue": "MESSAGE_DELIVERY", "job_id": job_id, "attempts": 5, "error": "TimeoutError"}
    ]

    assert message.deliver("0", online=["bob"], offline=[], meta=META)
    assert message.failures == []
    assert message.status == DELIVERED


def test_failed_encryption_cleared_when_encryption_succeeds() -> None:
    message = new_message(["bob"], encrypted=True)
    message.fail("MESSAGE_ENCRYPTION", f"MESSAGE_ENCRYPTION:{message.id}:seal", 3, "E", META)
    assert message.status == FAILED

    message.record_encryption({}, "v1", META)
    assert message.status == ENCRYPTED


def test_retry_request_clears_the_failure_of_that_job_only() -> None:
    message = new_message(["bob"])
    delivery = f"MESSAGE_DELIVERY:{message.id}:b0"
    indexing = f"MESSAGE_INDEXING:{message.id}:index"
    message.fail("MESSAGE_DELIVERY", delivery, 5, "E", META)
    message.fail("MESSAGE_INDEXING", indexing, 3, "E", META)

    message.request_retry("MESSAGE_DELIVERY", delivery, META)

    assert [f["job_id"] for f in message.failures] == [indexing]
    assert message.status == FAILED


def test_failing_the_same_job_again_replaces_its_entry() -> None:
    message = new_message(["bob"])
    job_id = f"MESSAGE_DELIVERY:{message.id}:b0"
    message.fail("MESSAGE_DELIVERY", job_id, 5, "E1", META)
    message.fail("MESSAGE_DELIVERY", job_id, 5, "E2", META)

    assert [f["error"] for f in message.failures] == ["E2"]


def test_notification_of_one_batch_clears_only_that_batch_failure() -> None:
    message = new_message(people(60))
    deliver_all(message)
    for key in ("0", "1"):
        job_id = f"MESSAGE_NOTIFICATION:{message.id}:b{key}"
        message.fail("MESSAGE_NOTIFICATION", job_id, 3, "E", META)

    assert message.mark_notified("0", {}, META)

    assert [f["job_id"] for f in message.failures] == [f"MESSAGE_NOTIFICATION:{message.id}:b1"]


def test_delivery_of_one_batch_keeps_another_batch_failure() -> None:
    message = new_message(people(60))
    failed = f"MESSAGE_DELIVERY:{message.id}:b0"
    message.fail("MESSAGE_DELIVERY", failed, 5, "TimeoutError", meta=META)

    assert message.deliver("1", online=message.batches()[1], offline=[], meta=META)

    assert [f["job_id"] for f in message.failures] == [failed]
    assert message.status == FAILED


# ---- meta on every event -------------------------------------------------------------


def test_every_event_carries_the_meta_it_was_given() -> None:
    metas = [
        {"actor_id": f"a{i}", "tenant_id": TENANT, "correlation_id": f"c{i}"} for i in range(9)
    ]
    message = new_message(["bob"], encrypted=True, meta=metas[0])
    job_id = f"MESSAGE_DELIVERY:{message.id}:b0"
    message.queue_encryption(meta=metas[1])
    message.record_encryption({}, "v1", meta=metas[2])
    message.fail("MESSAGE_DELIVERY", job_id, 5, "E", meta=metas[3])
    message.request_retry("MESSAGE_DELIVERY", job_id, meta=metas[4])
    message.deliver("0", online=[], offline=["bob"], meta=metas[5])
    message.mark_notified("0", {}, meta=metas[6])
    message.mark_read("bob", meta=metas[7])
    message.record_view("bob", "envelope", meta=metas[8])
    message.mark_indexed(meta={"actor_id": "indexer", "tenant_id": TENANT})
    message.shred("request", meta={"actor_id": "admin", "tenant_id": TENANT})

    events: list[Any] = list(message.collect_events())

    assert [type(e).__name__ for e in events] == [
        "Created",
        "EncryptionQueued",
        "Encrypted",
        "ProcessingFailed",
        "RetryRequested",
        "Delivered",
        "Notified",
        "Read",
        "Viewed",
        "Indexed",
        "Shredded",
    ]
    assert [e.meta for e in events[:9]] == metas
    assert events[9].meta["actor_id"] == "indexer"
    assert events[10].meta["actor_id"] == "admin"
    assert message.shredded


def test_message_can_be_rebuilt_from_its_events() -> None:
    message = new_message(people(60))
    deliver_all(message)
    message.mark_notified("0", {}, META)
    events = message.collect_events()

    copy: Message | None = None
    for event in events:
        copy = event.mutate(copy)

    assert copy is not None
    assert copy.id == message.id
    assert copy.delivered == message.delivered
    assert copy.notified_batches == ["0"]
    assert copy.status == DELIVERED


# ---- conversations -------------------------------------------------------------------


def new_conversation(kind: str, participants: list[str]) -> Conversation:
    return Conversation(
        tenant_id=TENANT, kind=kind, participant_ids=participants, title=None, meta=META
    )


def test_direct_conversation_cannot_change_its_participants() -> None:
    conversation = new_conversation(DIRECT, ["alice", "bob"])
    conversation.collect_events()

    with pytest.raises(DirectIsFixed):
        conversation.add_participants(["carol"], meta=META)
    with pytest.raises(DirectIsFixed):
        conversation.remove_participant("bob", meta=META)
    assert conversation.participant_ids == ["alice", "bob"]
    assert conversation.collect_events() == []


def test_direct_conversation_id_is_symmetric() -> None:
    assert direct_conversation_id(TENANT, "alice", "bob") == direct_conversation_id(
        TENANT, "bob", "alice"
    )
    assert direct_conversation_id(TENANT, "alice", "bob") != direct_conversation_id(
        "other", "alice", "bob"
    )
    assert direct_conversation_id(TENANT, "alice", "bob") != direct_conversation_id(
        TENANT, "alice", "carol"
    )


def test_a_direct_conversation_takes_the_shared_id_whoever_starts_it() -> None:
    one = new_conversation(DIRECT, ["alice", "bob"])
    other = new_conversation(DIRECT, ["bob", "alice"])

    assert one.id == other.id == direct_conversation_id(TENANT, "alice", "bob")
    assert new_conversation(GROUP, ["alice", "bob"]).id != one.id


def test_participants_are_deduplicated_at_start() -> None:
    conversation = new_conversation(GROUP, ["alice", "bob", "alice"])

    assert conversation.participant_ids == ["alice", "bob"]


def test_add_participants_dedupes() -> None:
    conversation = new_conversation(GROUP, ["alice", "bob"])
    conversation.collect_events()

    conversation.add_participants(["carol", "bob", "carol", "dave"], meta=META)

    assert conversation.participant_ids == ["alice", "bob", "carol", "dave"]
    events: list[Any] = list(conversation.collect_events())
    assert [type(e).__name__ for e in events] == ["ParticipantsAdded"]
    assert events[0].user_ids == ["carol", "dave"]
    assert events[0].meta == META


def test_adding_only_existing_participants_records_nothing() -> None:
    conversation = new_conversation(GROUP, ["alice", "bob"])
    conversation.collect_events()

    conversation.add_participants(["bob", "alice"], meta=META)

    assert conversation.collect_events() == []


def test_remove_participant() -> None:
    conversation = new_conversation(GROUP, ["alice", "bob", "carol"])

    conversation.remove_participant("bob", meta=META)

    assert conversation.participant_ids == ["alice", "carol"]
    with pytest.raises(NotAParticipant):
        conversation.check_participant("bob")


def test_removing_a_non_participant_raises() -> None:
    conversation = new_conversation(GROUP, ["alice", "bob"])
    conversation.collect_events()

    with pytest.raises(NotAParticipant):
        conversation.remove_participant("mallory", meta=META)
    assert conversation.collect_events() == []
