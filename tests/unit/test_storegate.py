"""The event-store gate: fail fast after a connection failure, open when a probe passes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from infrastructure.storegate import LockTimeout, StoreGate, install


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Datastore:
    """Stands in for eventsourcing's PostgresDatastore: ``get_connection`` only."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.connections = 0

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[str]:
        self.connections += 1
        if self.error is not None:
            raise self.error
        yield "conn"


def gated(probe_answers: list[bool]) -> tuple[Datastore, StoreGate, Clock, list[bool]]:
    clock = Clock()
    probes: list[bool] = []

    def probe() -> bool:
        answer = probe_answers.pop(0)
        probes.append(answer)
        return answer

    gate = StoreGate(probe, probe_every=0.5, clock=clock)
    store = Datastore()
    install(store, gate)
    return store, gate, clock, probes


def use(store: Any) -> str:
    with store.get_connection() as conn:
        return str(conn)


def test_an_open_gate_lets_every_call_through_without_probing() -> None:
    store, gate, _, probes = gated([])
    assert [use(store) for _ in range(3)] == ["conn"] * 3
    assert store.connections == 3 and probes == [] and not gate.down


def test_after_a_connection_failure_calls_fail_at_once_until_a_probe_passes() -> None:
    store, gate, clock, probes = gated([False, True])
    store.error = OperationalError("couldn't get a connection after 5.00 sec")
    with pytest.raises(OperationalError):
        use(store)
    assert gate.down and store.connections == 1
    store.error = None
    with pytest.raises(OperationalError, match="unreachable"):
        use(store)  # probes at once: still down
    with pytest.raises(OperationalError, match="unreachable"):
        use(store)  # no second probe within probe_every
    assert probes == [False] and store.connections == 1
    clock.now += 0.5
    assert use(store) == "conn"
    assert probes == [False, True] and not gate.down and store.connections == 2


def test_errors_that_are_not_about_the_connection_leave_the_gate_open() -> None:
    store, gate, _, _ = gated([])
    store.error = IntegrityError("duplicate key")
    with pytest.raises(IntegrityError):
        use(store)
    assert not gate.down


def test_reopening_runs_the_cleanup_once() -> None:
    clock = Clock()
    cleaned: list[bool] = []
    gate = StoreGate(
        lambda: True, probe_every=0.5, clock=clock, on_open=lambda: cleaned.append(True)
    )
    gate.failed()
    gate.check()
    gate.check()
    assert cleaned == [True] and not gate.down


class Connection:
    closed = False

    def close(self) -> None:
        self.closed = True


class ConvertingDatastore:
    """Raises what the body raised as eventsourcing does: psycopg's errors, converted."""

    def __init__(self) -> None:
        self.conn = Connection()

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[Connection]:
        try:
            yield self.conn
        except psycopg.OperationalError as error:
            raise OperationalError(str(error)) from error


def test_a_lock_timeout_is_raised_once_as_lock_timeout_and_leaves_the_gate_open() -> None:
    gate = StoreGate(lambda: True, probe_every=0.5, clock=Clock())
    store = ConvertingDatastore()
    install(store, gate)
    with pytest.raises(LockTimeout) as raised, store.get_connection():
        raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
    # eventsourcing's @retry retries only its own OperationalError; the HTTP layer answers
    # psycopg's with 503 and Retry-After.
    assert not isinstance(raised.value, OperationalError)
    assert isinstance(raised.value, psycopg.OperationalError)
    assert not gate.down
    assert store.conn.closed  # its prepared statements may be out of step: not reused


def test_other_operational_errors_still_shut_the_gate() -> None:
    gate = StoreGate(lambda: True, probe_every=0.5, clock=Clock())
    store = ConvertingDatastore()
    install(store, gate)
    with pytest.raises(OperationalError), store.get_connection():
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    assert gate.down and not store.conn.closed
