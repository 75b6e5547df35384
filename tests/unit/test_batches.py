"""Units of work: many jobs, one read and one write, an outcome of its own for each job."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.batches import BatchProcessor
from application.errors import Conflict, NotFound
from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
)
from application.loading import Loader
from application.messaging import Messaging
from application.outgoing import Outgoing
from application.policies import jobs_for
from application.ports import Crypto, Delivered, HolderType, Notice, Outcomes, VaultEntry
from application.processing import JobNotReady, Processor
from domain.events import Context
from domain.message import Message
from infrastructure.crypto import AesGcmCipher, MasterKeyring
from infrastructure.eventreader import event_reader
from interfaces.http.wire import envelope_dict
from tests.recipient import open_envelope, public_pem
from tests.unit.test_encryption import KEY_A, MemoryVault

TENANT = "clinic"


class Vault(MemoryVault):
    def get_many(
        self, holder_type: HolderType, wanted: list[tuple[UUID, str]]
    ) -> dict[tuple[UUID, str], VaultEntry]:
        return {(m, h): e for m, h in wanted if (e := self.get(m, holder_type, h)) is not None}


class Recorder:
    """Presence, notifier and indexer that remember how they were called."""

    def __init__(self, online: set[str] | None = None) -> None:
        self.online_users = online or set()
        self.presence_calls = 0
        self.notify_calls: list[list[Delivered]] = []

    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]:
        self.presence_calls += 1
        return self.online_users & set(user_ids)

    def notify(self, notice: Notice, offline: list[str], online: list[str]) -> Outcomes:
        return self.notify_many([(notice, offline, online)])[0]  # type: ignore[return-value]

    def notify_many(self, batch: list[Delivered]) -> list[Outcomes | Exception]:
        self.notify_calls.append(batch)
        return [{u: {"none": "online"} for u in [*off, *on]} for _, off, on in batch]

    def index(self, message: Any) -> None:
        return None


def ctx(user: str) -> Context:
    return Context(actor_id=user, tenant_id=TENANT)


@pytest.fixture
def app() -> Iterator[Messaging]:
    crypto = Crypto(AesGcmCipher(), MasterKeyring.from_spec(KEY_A), Vault())
    messaging = Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield messaging
    messaging.close()


def batches(app: Messaging, outside: Recorder | None = None) -> BatchProcessor:
    outside = outside or Recorder()
    processor = Processor(app, app.crypto, outside, outside, outside)
    return BatchProcessor(processor, Loader(app, event_reader(app.recorder)))


def send(app: Messaging, to: str = "bob", **options: Any) -> UUID:
    return app.send_direct(ctx("alice"), to, Outgoing(content="hi", **options)).message.id


def job(queue: str, message_id: UUID, part: str) -> Job:
    return Job(queue, message_id, part, TENANT)


def count_saves(app: Messaging, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    saves: list[int] = []
    original = app.save

    def counted(*objs: Any, **kwargs: Any) -> Any:
        saves.append(len(objs))
        return original(*objs, **kwargs)

    monkeypatch.setattr(app, "save", counted)
    return saves


def test_a_unit_stores_the_events_of_all_its_jobs_in_one_save(
    app: Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [send(app, to) for to in ("bob", "carol", "dave")]
    outside = Recorder(online={"carol"})
    unit = [job(MESSAGE_DELIVERY, i, "b0") for i in ids] + [
        job(MESSAGE_INDEXING, i, "index") for i in ids
    ]
    saves = count_saves(app, monkeypatch)

    results = batches(app, outside).run(unit)

    assert [r.error for r in results] == [None] * 6
    assert len(saves) == 1
    assert outside.presence_calls == 1  # who is online: asked once for the whole unit
    for message_id in ids:
        message = app.get_message(TENANT, message_id)
        assert message.is_delivered and message.indexed
    assert app.get_message(TENANT, ids[1]).online == ["carol"]


def test_a_failing_job_keeps_its_error_and_the_others_their_events(app: Messaging) -> None:
    good = send(app)
    unknown = uuid4()
    results = batches(app).run(
        [job(MESSAGE_DELIVERY, unknown, "b0"), job(MESSAGE_DELIVERY, good, "b0")]
    )
    assert isinstance(results[0].error, NotFound)
    assert results[1].error is None
    assert app.get_message(TENANT, good).is_delivered


def test_a_repeated_unit_records_nothing_twice(app: Messaging) -> None:
    mid = send(app)
    unit = [job(MESSAGE_DELIVERY, mid, "b0"), job(MESSAGE_INDEXING, mid, "index")]
    runner = batches(app)
    runner.run(unit)
    version = app.get_message(TENANT, mid).version
    again = runner.run(unit)
    assert [r.error for r in again] == [None, None]
    assert app.get_message(TENANT, mid).version == version


def test_a_message_changed_elsewhere_is_run_again_alone_and_the_rest_stays_batched(
    app: Messaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = send(app), send(app, "carol")
    runner = batches(app)
    runner.run([job(MESSAGE_DELIVERY, a, "b0"), job(MESSAGE_DELIVERY, b, "b0")])
    # The unit keeps both messages as it saved them; bob reads one of them elsewhere.
    app.mark_read(ctx("bob"), a)
    saves = count_saves(app, monkeypatch)

    results = runner.run([job(MESSAGE_INDEXING, a, "index"), job(MESSAGE_INDEXING, b, "index")])

    assert [r.error for r in results] == [None, None]
    assert len(saves) >= 3  # the unit's save, the clean part again, then a's own
    for message_id in (a, b):
        message = app.get_message(TENANT, message_id)
        assert message.indexed
        kinds = [type(e).__name__ for e in app.events.get(message_id)]
        assert kinds.count("Indexed") == 1 and kinds.count("Delivered") == 1
    assert app.get_message(TENANT, a).read_by == ["bob"]


def test_a_group_split_gives_one_delivery_job_per_batch(app: Messaging) -> None:
    members = [f"u{i:03d}" for i in range(120)]
    group = app.start_conversation(ctx("alice"), "group", members, "ward")
    mid = app.send_group(ctx("alice"), group.id, Outgoing(content="hi")).message.id
    [split] = batches(app).run([job(BATCH_MESSAGE_SENDING, mid, "split")])
    assert [j.part for j in split.follow_ups] == ["b0", "b1", "b2"]
    delivered = batches(app).run(split.follow_ups)
    assert [r.error for r in delivered] == [None] * 3
    assert app.get_message(TENANT, mid).delivered_count == 120


def test_notifications_of_a_unit_are_sent_in_one_call(app: Messaging) -> None:
    ids = [send(app, to) for to in ("bob", "carol")]
    outside = Recorder()
    runner = batches(app, outside)
    runner.run([job(MESSAGE_DELIVERY, i, "b0") for i in ids])
    results = runner.run([job(MESSAGE_NOTIFICATION, i, "b0") for i in ids])
    assert [r.error for r in results] == [None, None]
    assert len(outside.notify_calls) == 1 and len(outside.notify_calls[0]) == 2
    assert all(app.get_message(TENANT, i).is_notified for i in ids)


def test_encryption_wraps_for_every_participant_and_a_job_that_cannot_fails_alone(
    app: Messaging,
) -> None:
    for user in ("alice", "bob", "carol"):
        app.register_key(ctx(user), public_pem(user))
    ready = send(app, encrypted=True)
    lacking = send(app, "carol", encrypted=True)
    vault = app.crypto.vault
    assert isinstance(vault, Vault)
    vault.shred(lacking)  # its data key is not (yet) in the vault

    results = batches(app).run(
        [job(MESSAGE_ENCRYPTION, ready, "seal"), job(MESSAGE_ENCRYPTION, lacking, "seal")]
    )

    assert results[0].error is None
    assert isinstance(results[1].error, JobNotReady)
    message: Message = app.get_message(TENANT, ready)
    assert message.encryption is not None
    assert sorted(message.encryption["recipientKeyIds"]) == ["alice", "bob"]
    assert open_envelope("bob", envelope_dict(app.envelope(ctx("bob"), ready))) == b"hi"
    assert app.get_message(TENANT, lacking).encryption is None


def test_a_high_priority_send_keeps_its_lane_through_its_jobs_and_an_operator_retry(
    app: Messaging,
) -> None:
    conversation = app.start_conversation(ctx("alice"), "group", ["bob", "carol"], None)
    sent = app.send_group(ctx("alice"), conversation.id, Outgoing(content="hi", priority="high"))
    [first, _] = sent.jobs
    assert first.priority == "high"
    [split] = batches(app).run([first])
    assert [j.route for j in split.follow_ups] == ["MESSAGE_DELIVERY.high"]

    batches(app).run(split.follow_ups)
    message = app.get_message(TENANT, sent.message.id)
    stored = list(app.events.get(sent.message.id))
    assert stored[-1].meta["priority"] == "high"  # recorded by the job, in its lane
    [notification] = jobs_for(stored[-1])
    assert notification.route == "MESSAGE_NOTIFICATION.high"

    message.fail(MESSAGE_NOTIFICATION, notification.job_id, 3, "Boom", stored[-1].meta)
    app.save(message)
    admin = Context(actor_id="ops", tenant_id=TENANT, actor_role="admin")
    app.request_retry(admin, notification.job_id)
    retry = list(app.events.get(sent.message.id))[-1]
    [again] = jobs_for(retry)
    assert again.job_id == notification.job_id and again.route == "MESSAGE_NOTIFICATION.high"


def test_jobs_of_a_cancelled_send_record_nothing(app: Messaging) -> None:
    for user in ("alice", "bob"):
        app.register_key(ctx(user), public_pem(user))
    due = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    mid = send(app, send_at=due, encrypted=True)
    message = app.get_message(TENANT, mid)
    assert message.status == "scheduled"
    cancelled = app.cancel(ctx("alice"), mid, datetime.now(UTC))
    assert cancelled.status == "cancelled"
    version = app.get_message(TENANT, mid).version

    results = batches(app).run(
        [
            job(MESSAGE_ENCRYPTION, mid, "seal"),
            job(MESSAGE_DELIVERY, mid, "b0"),
            job(MESSAGE_INDEXING, mid, "index"),
        ]
    )

    assert [r.error for r in results] == [None, None, None]
    assert app.get_message(TENANT, mid).version == version
    with pytest.raises(Conflict):
        app.cancel(ctx("alice"), mid, datetime.now(UTC))
