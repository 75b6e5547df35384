"""Which jobs follow which event, and the jobs themselves (ids, wire form, backoff)."""

from __future__ import annotations

import json
import random
from typing import Any
from uuid import UUID

import pytest

from application.jobs import (
    BATCH_MESSAGE_SENDING,
    DEFAULT_QUEUE_SETTINGS,
    MESSAGE_CLEANUP,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    QUEUES,
    BadJobId,
    Job,
    QueueSettings,
)
from application.policies import first_jobs, jobs_for, pending_jobs
from domain.message import Message
from tests.unit.factories import META, TENANT, new_message, people


def last_event(message: Message) -> Any:
    return message.collect_events()[-1]


def ids(jobs: list[Job]) -> list[str]:
    return [job.job_id for job in jobs]


# ---- jobs_for --------------------------------------------------------------------------


def test_a_direct_message_is_delivered_and_indexed() -> None:
    message = new_message(["bob"])

    jobs = jobs_for(last_event(message))

    assert ids(jobs) == [
        f"MESSAGE_DELIVERY:{message.id}:b0",
        f"MESSAGE_INDEXING:{message.id}:index",
    ]
    assert all(job.tenant_id == TENANT and job.correlation_id == "corr-1" for job in jobs)
    assert all(job.attempt == 1 for job in jobs)


def test_a_group_message_is_split_first() -> None:
    message = new_message(people(3), index=False)

    assert ids(jobs_for(last_event(message))) == [f"BATCH_MESSAGE_SENDING:{message.id}:split"]


def test_an_encrypted_message_is_not_delivered_before_it_is_sealed() -> None:
    message = new_message(["bob"], encrypted=True)
    created = message.collect_events()[0]
    message.queue_encryption(meta=META)
    queued = last_event(message)
    message.record_encryption({}, "v1", meta=META)
    encrypted = last_event(message)

    assert ids(jobs_for(created)) == [f"MESSAGE_INDEXING:{message.id}:index"]
    assert ids(jobs_for(queued)) == [f"MESSAGE_ENCRYPTION:{message.id}:seal"]
    assert ids(jobs_for(encrypted)) == [f"MESSAGE_DELIVERY:{message.id}:b0"]


def test_an_encrypted_group_message_is_split_once_sealed() -> None:
    message = new_message(people(2), encrypted=True)
    message.record_encryption({}, "v1", meta=META)

    assert ids(jobs_for(last_event(message))) == [f"BATCH_MESSAGE_SENDING:{message.id}:split"]


def test_a_delivered_batch_is_notified_when_asked() -> None:
    message = new_message(people(60))
    message.deliver("1", online=[], offline=message.batches()[1], meta=META)

    jobs = jobs_for(last_event(message))

    assert ids(jobs) == [f"MESSAGE_NOTIFICATION:{message.id}:b1"]
    assert jobs[0].correlation_id == "corr-1"


def test_no_notification_when_not_asked() -> None:
    message = new_message(["bob"], notify=False)
    message.deliver("0", online=[], offline=["bob"], meta=META)

    assert jobs_for(last_event(message)) == []


@pytest.mark.parametrize(
    "job_id_part",
    [
        (MESSAGE_DELIVERY, "b2"),
        (MESSAGE_NOTIFICATION, "b0"),
        (MESSAGE_ENCRYPTION, "seal"),
        (BATCH_MESSAGE_SENDING, "split"),
    ],
)
def test_a_retry_request_republishes_that_job(job_id_part: tuple[str, str]) -> None:
    queue, part = job_id_part
    message = new_message(people(120))
    job_id = f"{queue}:{message.id}:{part}"
    message.fail(queue, job_id, 3, "E", meta=META)
    message.request_retry(queue, job_id, meta=META)

    jobs = jobs_for(last_event(message))

    assert ids(jobs) == [job_id]
    assert jobs[0].attempt == 1
    assert jobs[0].tenant_id == TENANT


def test_other_events_schedule_nothing() -> None:
    message = new_message(["bob"])
    message.deliver("0", online=["bob"], offline=[], meta=META)
    message.collect_events()
    message.mark_notified("0", {}, meta=META)
    message.mark_indexed(meta=META)
    message.mark_read("bob", meta=META)
    message.fail(MESSAGE_DELIVERY, "x", 1, "E", meta=META)
    message.shred("asked", meta=META)

    assert [jobs_for(event) for event in message.collect_events()] == [[]] * 5


def test_jobs_for_the_same_event_have_the_same_ids() -> None:
    message = new_message(people(3))
    event = last_event(message)

    assert ids(jobs_for(event)) == ids(jobs_for(event))


# ---- first_jobs / pending_jobs ---------------------------------------------------------


def test_first_jobs_match_what_the_created_event_schedules() -> None:
    for message in (new_message(["bob"]), new_message(people(3), index=False)):
        assert first_jobs(message, "corr-1") == jobs_for(last_event(message))


def test_first_jobs_of_an_encrypted_message_seal_first() -> None:
    message = new_message(["bob"], encrypted=True)

    assert ids(first_jobs(message)) == [
        f"MESSAGE_ENCRYPTION:{message.id}:seal",
        f"MESSAGE_INDEXING:{message.id}:index",
    ]


def test_first_jobs_of_a_client_sealed_message_deliver() -> None:
    message = new_message(["bob"], encrypted=True, index=False)
    message.record_encryption({"iv": "x"}, "v1", meta=META)

    jobs = first_jobs(message, "corr-9")

    assert ids(jobs) == [f"MESSAGE_DELIVERY:{message.id}:b0"]
    assert jobs[0].correlation_id == "corr-9"


def test_pending_jobs_of_a_new_message_deliver_every_batch() -> None:
    message = new_message(people(120))

    assert ids(pending_jobs(message)) == [
        f"MESSAGE_DELIVERY:{message.id}:b0",
        f"MESSAGE_DELIVERY:{message.id}:b1",
        f"MESSAGE_DELIVERY:{message.id}:b2",
        f"MESSAGE_INDEXING:{message.id}:index",
    ]


def test_pending_jobs_pick_up_where_the_message_stands() -> None:
    message = new_message(people(120))
    message.deliver("0", online=[], offline=message.batches()[0], meta=META)
    message.deliver("2", online=[], offline=message.batches()[2], meta=META)
    message.mark_notified("0", {}, meta=META)
    message.mark_indexed(meta=META)

    assert ids(pending_jobs(message)) == [
        f"MESSAGE_DELIVERY:{message.id}:b1",
        f"MESSAGE_NOTIFICATION:{message.id}:b2",
    ]


def test_pending_jobs_of_a_finished_message_are_none() -> None:
    message = new_message(people(60))
    for key, batch in zip(message.batch_keys(), message.batches(), strict=True):
        message.deliver(key, online=[], offline=batch, meta=META)
        message.mark_notified(key, {}, meta=META)
    message.mark_indexed(meta=META)

    assert pending_jobs(message) == []


def test_pending_jobs_without_notification_or_index() -> None:
    message = new_message(people(60), notify=False, index=False)
    message.deliver("0", online=[], offline=message.batches()[0], meta=META)

    assert ids(pending_jobs(message)) == [f"MESSAGE_DELIVERY:{message.id}:b1"]


def test_pending_jobs_of_an_unsealed_message_only_seal() -> None:
    message = new_message(people(3), encrypted=True, index=False)

    assert ids(pending_jobs(message)) == [f"MESSAGE_ENCRYPTION:{message.id}:seal"]


# ---- Job -------------------------------------------------------------------------------

MID = UUID("5a1f0c52-3b0e-4f3c-9d1e-7a2b8c9d0e1f")


def test_job_id_is_queue_message_part() -> None:
    job = Job(MESSAGE_DELIVERY, MID, "b3", TENANT, attempt=4, correlation_id="c")

    assert job.job_id == f"MESSAGE_DELIVERY:{MID}:b3"
    assert job.next_attempt().job_id == job.job_id
    assert job.next_attempt().attempt == 5


def test_job_survives_the_wire_as_json() -> None:
    job = Job(MESSAGE_NOTIFICATION, MID, "b1", TENANT, attempt=2, correlation_id="corr")

    wire = json.loads(json.dumps(job.to_wire()))

    assert wire["messageId"] == str(MID)
    assert Job.from_wire(wire) == job


def test_from_wire_defaults_attempt_and_correlation() -> None:
    body = {"queue": MESSAGE_INDEXING, "messageId": str(MID), "part": "index", "tenantId": "t"}

    assert Job.from_wire(body) == Job(MESSAGE_INDEXING, MID, "index", "t", 1, "")


GOOD = {"queue": MESSAGE_DELIVERY, "messageId": str(MID), "part": "b0", "tenantId": TENANT}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {k: v for k, v in GOOD.items() if k != "messageId"},
        {k: v for k, v in GOOD.items() if k != "tenantId"},
        {**GOOD, "messageId": "not-a-uuid"},
        {**GOOD, "messageId": None},
        {**GOOD, "attempt": "two"},
        {**GOOD, "attempt": None},
        {**GOOD, "attempt": float("nan")},
        [],
        "MESSAGE_DELIVERY",
        None,
    ],
    ids=[
        "empty",
        "no-message",
        "no-tenant",
        "bad-uuid",
        "null-uuid",
        "text-attempt",
        "null-attempt",
        "nan-attempt",
        "list",
        "string",
        "null",
    ],
)
def test_from_wire_refuses_malformed_bodies(body: Any) -> None:
    with pytest.raises(BadJobId):
        Job.from_wire(body)


def test_from_wire_refuses_an_infinite_attempt() -> None:
    body = json.loads(json.dumps(GOOD)[:-1] + ', "attempt": 1e999}')

    with pytest.raises(BadJobId):
        Job.from_wire(body)


def test_from_wire_refuses_an_unknown_queue() -> None:
    with pytest.raises(BadJobId):
        Job.from_wire({**GOOD, "queue": "NO_SUCH_QUEUE"})


def test_parse_id_rebuilds_the_job() -> None:
    job = Job(BATCH_MESSAGE_SENDING, MID, "split", TENANT, attempt=3, correlation_id="c")

    parsed = Job.parse_id(job.job_id, TENANT)

    assert parsed == Job(BATCH_MESSAGE_SENDING, MID, "split", TENANT)
    assert parsed.job_id == job.job_id


@pytest.mark.parametrize("queue", QUEUES)
def test_parse_id_knows_every_queue(queue: str) -> None:
    assert Job.parse_id(f"{queue}:{MID}:x", TENANT).queue == queue


@pytest.mark.parametrize(
    "job_id",
    [
        f"NO_SUCH_QUEUE:{MID}:b0",
        f"message_delivery:{MID}:b0",
        "MESSAGE_DELIVERY:not-a-uuid:b0",
        f"MESSAGE_DELIVERY:{MID}",
        "MESSAGE_DELIVERY",
        "",
    ],
)
def test_parse_id_refuses_bad_ids(job_id: str) -> None:
    with pytest.raises(BadJobId):
        Job.parse_id(job_id, TENANT)


# ---- backoff ---------------------------------------------------------------------------


def exponential(base: float) -> QueueSettings:
    return QueueSettings("Q", 1, 5, "exponential", base, 30.0)


@pytest.mark.parametrize(("attempt", "factor"), [(2, 1), (3, 2), (4, 4), (5, 8), (6, 16)])
def test_exponential_backoff_doubles_with_at_most_20_percent_jitter(
    attempt: int, factor: int
) -> None:
    settings, rng = exponential(2.0), random.Random(7)
    base = 2.0 * factor

    delays = [settings.delay_before(attempt, rng) for _ in range(500)]

    assert all(base <= delay <= base * 1.2 for delay in delays)
    assert max(delays) > base * 1.15  # the jitter is really there ...
    assert min(delays) < base * 1.05  # ... and spread over its range


def test_exponential_backoff_grows_between_attempts() -> None:
    settings = exponential(1.0)

    assert settings.delay_before(4, random.Random(1)) > settings.delay_before(3, random.Random(1))


def test_backoff_before_a_first_retry_is_never_below_the_base() -> None:
    assert 2.0 <= exponential(2.0).delay_before(1, random.Random(3)) <= 2.4


def test_fixed_backoff_stays_fixed() -> None:
    settings = DEFAULT_QUEUE_SETTINGS[MESSAGE_CLEANUP]

    assert settings.backoff == "fixed"
    assert {settings.delay_before(a, random.Random(a)) for a in range(1, 10)} == {10.0}


def test_every_queue_has_default_settings() -> None:
    assert set(DEFAULT_QUEUE_SETTINGS) == set(QUEUES)
    delivery = DEFAULT_QUEUE_SETTINGS[MESSAGE_DELIVERY]
    assert (delivery.concurrency, delivery.max_attempts, delivery.backoff_seconds) == (10, 5, 2.0)
