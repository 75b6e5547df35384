"""Queue rules without I/O: backoff, fault injection, percentiles, and the admin endpoints."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from application.jobs import DEFAULT_QUEUE_SETTINGS, QUEUES, Job
from application.messaging import Messaging
from application.outgoing import Outgoing
from application.ports import Crypto
from domain.events import Context
from domain.message import Message
from domain.percentiles import percentile
from infrastructure.faults import FaultInjector, InjectedFault
from infrastructure.settings import SettingsError, load, queue_settings
from interfaces.http.app import create_app
from tests.unit.api.fakes import (
    TENANT,
    DictVault,
    FakeCipher,
    FakeKeyring,
    FakeQueries,
    auth,
    check_error_shape,
    make_settings,
)

JOB = Job("MESSAGE_INDEXING", UUID(int=1), "index", TENANT)


# ---- settings and backoff -------------------------------------------------------------


def test_spec_defaults_and_env_overrides() -> None:
    queues = queue_settings({})
    assert set(queues) == set(QUEUES)
    delivery = queues["MESSAGE_DELIVERY"]
    assert (delivery.concurrency, delivery.max_attempts, delivery.timeout_seconds) == (10, 5, 30)
    assert queues["MESSAGE_CLEANUP"].backoff == "fixed"
    changed = queue_settings(
        {
            "QUEUE_MESSAGE_DELIVERY_CONCURRENCY": "3",
            "QUEUE_MESSAGE_DELIVERY_MAX_ATTEMPTS": "7",
            "QUEUE_MESSAGE_DELIVERY_BACKOFF": "fixed",
            "QUEUE_MESSAGE_DELIVERY_BACKOFF_SECONDS": "0.5",
            "QUEUE_MESSAGE_DELIVERY_TIMEOUT_SECONDS": "9",
        }
    )["MESSAGE_DELIVERY"]
    assert (changed.concurrency, changed.max_attempts, changed.backoff) == (3, 7, "fixed")
    assert (changed.backoff_seconds, changed.timeout_seconds) == (0.5, 9.0)
    with pytest.raises(SettingsError):
        queue_settings({"QUEUE_MESSAGE_DELIVERY_BACKOFF": "linear"})
    with pytest.raises(SettingsError):
        queue_settings({"QUEUE_MESSAGE_DELIVERY_CONCURRENCY": "many"})


def test_health_rules_come_from_the_environment() -> None:
    settings = load(
        {
            "DATABASE_URL": "postgresql://x@127.0.0.1/x",
            "JWT_SECRET": "s" * 40,
            "ENCRYPTION_MASTER_KEYS": "unused",
            "QUEUE_HEALTH_STALL_SECONDS": "15",
            "QUEUE_HEALTH_FAILURE_RATE": "0.5",
            "QUEUE_HEALTH_MIN_ATTEMPTS": "10",
        }
    )
    rules = settings.health
    assert (rules.stall_seconds, rules.failure_rate, rules.min_attempts) == (15.0, 0.5, 10)


def test_exponential_backoff_doubles_with_at_most_20_percent_jitter() -> None:
    delivery = DEFAULT_QUEUE_SETTINGS["MESSAGE_DELIVERY"]  # exponential, 2 s
    rng = random.Random(7)
    for attempt, base in ((2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)):
        delays = [delivery.delay_before(attempt, rng) for _ in range(200)]
        assert all(base <= d <= base * 1.2 for d in delays), attempt
        assert len(set(delays)) > 1  # jittered


def test_fixed_backoff_is_the_same_every_time() -> None:
    cleanup = DEFAULT_QUEUE_SETTINGS["MESSAGE_CLEANUP"]  # fixed, 10 s
    assert {cleanup.delay_before(a) for a in (2, 3, 4)} == {10.0}


# ---- fault injection ------------------------------------------------------------------


def test_fault_injection_rules() -> None:
    faults = FaultInjector("MESSAGE_INDEXING:2, MESSAGE_DELIVERY:always")
    for attempt in (1, 2):
        with pytest.raises(InjectedFault):
            faults.check(Job("MESSAGE_INDEXING", UUID(int=1), "index", TENANT, attempt))
    faults.check(Job("MESSAGE_INDEXING", UUID(int=1), "index", TENANT, 3))
    with pytest.raises(InjectedFault):
        faults.check(Job("MESSAGE_DELIVERY", UUID(int=1), "b0", TENANT, 9))
    faults.check(Job("MESSAGE_NOTIFICATION", UUID(int=1), "b0", TENANT))
    FaultInjector("").check(JOB)  # inert by default
    for bad in ("NOPE:1", "MESSAGE_INDEXING:often", "MESSAGE_INDEXING"):
        with pytest.raises(ValueError):
            FaultInjector(bad)


def test_a_hang_holds_the_first_attempt_until_released() -> None:
    faults = FaultInjector("MESSAGE_INDEXING:hang")
    outcome: list[BaseException] = []

    def first_attempt() -> None:
        try:
            faults.check(JOB)
        except InjectedFault as error:
            outcome.append(error)

    thread = threading.Thread(target=first_attempt)
    thread.start()
    thread.join(timeout=0.2)
    assert thread.is_alive() and not outcome
    faults.check(Job("MESSAGE_INDEXING", UUID(int=1), "index", TENANT, 2))  # later ones run
    faults.release()
    thread.join(timeout=5)
    assert len(outcome) == 1


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile([7.0], 0.95) == 7.0


# ---- the admin endpoints ---------------------------------------------------------------


@dataclass
class FakeMonitor:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def knows(self, name: str) -> bool:
        return name in QUEUES

    def metrics(self) -> dict[str, Any]:
        return {"queues": {name: {"waiting": 0} for name in QUEUES}}

    def health(self, name: str) -> dict[str, Any]:
        return {"queue": name, "status": "healthy", "checks": {}}

    def failed(
        self, tenant_id: str, queue: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        self.calls.append((tenant_id, queue, limit, offset))
        return [], 0


@dataclass
class QueueContainer:
    settings: Any
    messaging: Messaging
    queries: FakeQueries
    monitor: FakeMonitor

    def readiness(self) -> dict[str, bool]:
        return {}


@pytest.fixture
def container() -> QueueContainer:
    crypto = Crypto(cipher=FakeCipher(), keyring=FakeKeyring(), vault=DictVault())
    messaging = Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return QueueContainer(make_settings(), messaging, FakeQueries(), FakeMonitor())


@pytest.fixture
def client(container: QueueContainer) -> Iterator[TestClient]:
    with TestClient(create_app(container), raise_server_exceptions=False) as c:
        c.event_hooks["response"] = [check_error_shape]
        yield c


ADMIN = {"roles": ["admin"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/messages/queue/metrics"),
        ("GET", "/api/messages/queue/MESSAGE_DELIVERY/health"),
        ("GET", "/api/messages/queue/MESSAGE_DELIVERY/failed"),
        ("POST", "/api/messages/queue/MESSAGE_DELIVERY/failed/x/retry"),
    ],
)
def test_only_admins_reach_the_queue_endpoints(client: TestClient, method: str, path: str) -> None:
    for roles in (["user"], ["auditor"], ["user", "auditor"]):
        assert client.request(method, path, headers=auth(roles=roles)).status_code == 403
    assert client.request(method, path).status_code == 401


def test_metrics_and_health_answer_for_known_queues(client: TestClient) -> None:
    r = client.get("/api/messages/queue/metrics", headers=auth(**ADMIN))
    assert r.status_code == 200 and set(r.json()["queues"]) == set(QUEUES)
    r = client.get("/api/messages/queue/MESSAGE_INDEXING/health", headers=auth(**ADMIN))
    assert r.json() == {"queue": "MESSAGE_INDEXING", "status": "healthy", "checks": {}}
    for path in ("/api/messages/queue/nope/health", "/api/messages/queue/nope/failed"):
        r = client.get(path, headers=auth(**ADMIN))
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_failed_list_is_paged_per_tenant(client: TestClient, container: QueueContainer) -> None:
    url = "/api/messages/queue/MESSAGE_DELIVERY/failed"
    r = client.get(url + "?limit=5&offset=10", headers=auth(**ADMIN))
    assert r.json() == {"items": [], "total": 0}
    assert container.monitor.calls == [(TENANT, "MESSAGE_DELIVERY", 5, 10)]
    for bad in ("limit=0", "limit=201", "offset=-1", "limit=x"):
        assert client.get(f"{url}?{bad}", headers=auth(**ADMIN)).status_code == 422


def test_retry_records_who_asked_and_only_for_a_failed_job(
    client: TestClient, container: QueueContainer
) -> None:
    app = container.messaging
    sent = app.send_direct(Context("alice", TENANT), "bob", Outgoing(content="hi"))
    mid = sent.message.id
    job_id = f"MESSAGE_INDEXING:{mid}:index"
    url = f"/api/messages/queue/MESSAGE_INDEXING/failed/{job_id}/retry"
    assert client.post(url, headers=auth("ops-1", **ADMIN)).status_code == 404  # not failed

    message = app.get_message(TENANT, mid)
    message.fail("MESSAGE_INDEXING", job_id, 3, "InjectedFault", {"actor_id": "system"})
    app.save(message)
    wrong_queue = f"/api/messages/queue/MESSAGE_DELIVERY/failed/{job_id}/retry"
    assert client.post(wrong_queue, headers=auth("ops-1", **ADMIN)).status_code == 404
    other_tenant = auth("ops-9", "elsewhere", **ADMIN)
    assert client.post(url, headers=other_tenant).status_code == 404
    for bogus in ("nonsense", f"MESSAGE_INDEXING:{mid}", "MESSAGE_INDEXING:not-a-uuid:index"):
        path = f"/api/messages/queue/MESSAGE_INDEXING/failed/{bogus}/retry"
        assert client.post(path, headers=auth("ops-1", **ADMIN)).status_code == 404

    r = client.post(url, headers=auth("ops-1", **ADMIN))
    assert r.status_code == 202
    assert r.json() == {"jobId": job_id, "state": "waiting"}
    retries = [e for e in app.events.get(mid) if isinstance(e, Message.RetryRequested)]
    assert [(e.queue, e.job_id) for e in retries] == [("MESSAGE_INDEXING", job_id)]
    assert retries[0].meta["actor_id"] == "ops-1" and retries[0].meta["actor_role"] == "admin"
    assert client.post(url, headers=auth("ops-1", **ADMIN)).status_code == 404  # done once


def test_the_openapi_document_lists_the_queue_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/messages/queue/metrics"]
    assert "post" in paths["/api/messages/queue/{name}/failed/{jobId}/retry"]
