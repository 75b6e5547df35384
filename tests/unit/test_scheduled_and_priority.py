"""Scheduled sends (held first jobs, cancel) and priority lanes, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from pydantic import ValidationError

from application.jobs import MESSAGE_DELIVERY, MESSAGE_INDEXING, BadJobId, Job, jobs_from_wire
from application.policies import dropped_jobs, first_jobs, held_jobs, jobs_for, pending_jobs
from domain.message import CANCELLED, SCHEDULED, MessageError
from infrastructure.broker import lanes_of
from infrastructure.worker.engine import BatchEngine
from infrastructure.worker.runner import Delivery, Running
from interfaces.http.schemas import SendDirect
from tests.unit.factories import META, new_message

DUE = "2030-01-31T09:00:00Z"
HIGH = {**META, "priority": "high"}


def ids(jobs: list[Job]) -> list[str]:
    return [job.job_id for job in jobs]


def test_a_scheduled_send_publishes_nothing_and_holds_its_first_jobs_until_due() -> None:
    message = new_message(send_at=DUE)
    [created] = message.collect_events()

    assert jobs_for(created) == []
    held = held_jobs(created)
    assert held is not None
    due, jobs = held
    assert due == datetime(2030, 1, 31, 9, tzinfo=UTC)
    assert ids(jobs) == [
        f"MESSAGE_DELIVERY:{message.id}:b0",
        f"MESSAGE_INDEXING:{message.id}:index",
    ]
    assert message.status == SCHEDULED


def test_an_encrypted_scheduled_send_is_sealed_for_its_recipients_only_when_due() -> None:
    message = new_message(send_at=DUE, encrypted=True)
    [created] = message.collect_events()

    held = held_jobs(created)
    assert held is not None
    assert ids(held[1])[0] == f"MESSAGE_ENCRYPTION:{message.id}:seal"
    assert ids(first_jobs(message)) == ids(held[1])


def test_a_send_at_once_holds_nothing() -> None:
    [created] = new_message().collect_events()
    assert held_jobs(created) is None


def test_the_reconciler_leaves_a_scheduled_send_alone_until_due() -> None:
    message = new_message(send_at=DUE)
    before = datetime(2030, 1, 31, 8, 59, tzinfo=UTC)
    after = datetime(2030, 1, 31, 9, 1, tzinfo=UTC)

    assert pending_jobs(message, before) == []
    assert pending_jobs(message) == []
    assert ids(pending_jobs(message, after)) == ids(first_jobs(message))


def test_a_cancelled_send_drops_its_held_jobs_and_never_runs() -> None:
    message = new_message(send_at=DUE)
    held = ids(first_jobs(message))
    message.cancel(held, META)
    cancelled = message.collect_events()[-1]

    assert message.status == CANCELLED
    assert dropped_jobs(cancelled) == held
    assert jobs_for(cancelled) == []
    assert pending_jobs(message, datetime(2031, 1, 1, tzinfo=UTC)) == []
    assert not message.deliver("0", ["bob"], [], META)
    assert not message.mark_indexed(META)
    assert not message.shown_to("bob") and message.shown_to("alice")
    with pytest.raises(MessageError):
        message.cancel(held, META)


def test_recipients_see_a_scheduled_send_once_it_begins() -> None:
    message = new_message(send_at=DUE)
    assert not message.shown_to("bob")
    message.deliver("0", ["bob"], [], META)
    assert message.shown_to("bob")
    with pytest.raises(MessageError):
        message.cancel([], META)


def test_a_high_priority_send_and_the_jobs_its_events_lead_to_take_the_high_lane() -> None:
    message = new_message(meta=HIGH)
    [created] = message.collect_events()
    jobs = jobs_for(created)

    assert [job.route for job in jobs] == ["MESSAGE_DELIVERY.high", "MESSAGE_INDEXING.high"]
    # The id does not name the lane: dedupe, the failed list and retries are unchanged.
    assert ids(jobs) == [
        f"MESSAGE_DELIVERY:{message.id}:b0",
        f"MESSAGE_INDEXING:{message.id}:index",
    ]
    assert jobs[0].next_attempt().route == "MESSAGE_DELIVERY.high"
    message.deliver("0", ["bob"], [], {**META, "priority": "high"})
    [notification] = jobs_for(message.collect_events()[-1])
    assert notification.route == "MESSAGE_NOTIFICATION.high"
    assert [job.priority for job in first_jobs(message)] == ["high", "high"]


def test_a_normal_job_travels_as_before() -> None:
    job = Job(MESSAGE_DELIVERY, uuid4(), "b0", "t")
    assert job.route == MESSAGE_DELIVERY
    assert "priority" not in job.to_wire()
    low = Job(MESSAGE_INDEXING, uuid4(), "index", "t", priority="low")
    assert jobs_from_wire(low.to_wire()) == [low]
    assert low.route == "MESSAGE_INDEXING.low"
    with pytest.raises(BadJobId):
        jobs_from_wire({**low.to_wire(), "priority": "urgent"})


def test_every_message_queue_has_three_lanes_taken_high_first() -> None:
    assert lanes_of(MESSAGE_DELIVERY) == [
        "MESSAGE_DELIVERY.high",
        "MESSAGE_DELIVERY",
        "MESSAGE_DELIVERY.low",
    ]
    assert lanes_of("MESSAGE_CLEANUP") == ["MESSAGE_CLEANUP"]


def test_the_engine_runs_high_priority_jobs_first_and_leaves_the_rest_for_the_next_unit() -> None:
    runner: Any = None
    engine = BatchEngine(runner, max_jobs=4)
    delivery = Delivery(None, pending=1)
    consumer: Any = None

    def runs(priority: str, n: int) -> list[Running]:
        return [
            Running(Job(MESSAGE_DELIVERY, uuid4(), "b0", "t", priority=priority), delivery, 0.0)
            for _ in range(n)
        ]

    engine.submit(consumer, runs("low", 1))
    engine.submit(consumer, runs("", 3))
    engine.submit(consumer, runs("high", 2))

    first = [run.job.priority for _, run in engine._next_unit()]
    second = [run.job.priority for _, run in engine._next_unit()]

    assert first == ["high", "high", "", ""]
    assert second == ["", "low"]
    assert engine._next_unit() == []


def _send(**fields: Any) -> SendDirect:
    return SendDirect.model_validate({"recipientId": "bob", "content": "hi", **fields})


def test_send_at_must_be_an_rfc3339_moment_with_offset_in_the_next_30_days() -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    body = _send(sendAt=soon.astimezone().isoformat(), priority="high")
    outgoing = body.outgoing()
    assert outgoing.send_at == soon.isoformat().replace("+00:00", "Z")
    assert outgoing.priority == "high"
    assert _send().outgoing().send_at is None and _send().outgoing().priority == ""
    for bad in (
        "2030-01-31 09:00",
        "2030-01-31T09:00:00",  # no offset
        "tomorrow",
        (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        (datetime.now(UTC) + timedelta(days=31)).isoformat(),
        "2030-02-30T09:00:00Z",
    ):
        with pytest.raises(ValidationError) as caught:
            _send(sendAt=bad)
        assert caught.value.errors()[0]["loc"] == ("sendAt",), bad
    with pytest.raises(ValidationError):
        _send(priority="urgent")
