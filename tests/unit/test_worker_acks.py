"""A worker acknowledges a broker message on the connection that received it, or not at all."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from application.jobs import DEFAULT_QUEUE_SETTINGS, MESSAGE_DELIVERY, Job
from infrastructure.worker.consumer import QueueConsumer
from infrastructure.worker.runner import Delivery, Running


class Message:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.acked = self.requeued = 0

    def ack(self) -> None:
        if self.fail:
            raise ConnectionError("connection lost")
        self.acked += 1

    def requeue(self) -> None:
        if self.fail:
            raise ConnectionError("connection lost")
        self.requeued += 1


class Runner:
    def batched(self, queue: str) -> bool:
        return True


def consumer() -> QueueConsumer:
    runner: Any = Runner()
    broker: Any = None
    made = QueueConsumer(DEFAULT_QUEUE_SETTINGS[MESSAGE_DELIVERY], broker, runner)
    made.connections = 2
    return made


def settled(delivery: Delivery, recorded: bool = True) -> Running:
    run = Running(Job(MESSAGE_DELIVERY, uuid4(), "b0", "t"), delivery, 0.0)
    run.recorded = recorded
    return run


def test_a_message_is_acked_once_every_job_it_carried_is_recorded() -> None:
    worker, message = consumer(), Message()
    delivery = Delivery(message, pending=2, connection=2)
    assert worker._complete(settled(delivery))
    assert message.acked == 0
    assert worker._complete(settled(delivery))
    assert message.acked == 1


def test_a_message_with_an_unrecorded_job_goes_back_to_the_broker() -> None:
    worker, message = consumer(), Message()
    delivery = Delivery(message, pending=2, connection=2)
    worker._complete(settled(delivery, recorded=False))
    assert not worker._complete(settled(delivery))
    assert (message.acked, message.requeued) == (0, 1)


def test_a_message_of_a_lost_connection_is_left_to_the_broker() -> None:
    worker, message = consumer(), Message(fail=True)
    assert worker._complete(settled(Delivery(message, pending=1, connection=1)))
    assert (message.acked, message.requeued) == (0, 0)


def test_an_ack_that_fails_makes_the_consumer_reconnect() -> None:
    # Swallowing it would leave kombu counting the message as unacknowledged: once the
    # prefetch is full of those, the consumer never asks the broker for more.
    worker = consumer()
    with pytest.raises(ConnectionError):
        worker._complete(settled(Delivery(Message(fail=True), pending=1, connection=2)))
