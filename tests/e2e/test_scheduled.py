"""Scheduled sends over real processes (PostgreSQL, Redis): held until due, through a
restart of every process, sent once; cancelled by their sender; refused when malformed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import PG_DSN
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, wait_for
from tests.e2e.sealing import envelope, register_keys
from tests.recipient import open_envelope, public_pem, seal

pytestmark = pytest.mark.e2e

ADMIN = auth("ops", roles=["admin"])


@pytest.fixture
def runtime(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[Runtime]:
    started = Runtime("services", services_env(pg_schema, redis_url), tmp_path).start()
    yield started
    started.stop()


def sql(schema: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def events(schema: str, message_id: str, name: str) -> int:
    rows = sql(
        schema,
        "SELECT count(*) FROM messaging_events WHERE originator_id = %s::uuid AND topic = %s",
        message_id,
        f"courier.message:{name}",
    )
    return int(rows[0][0])


def rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def schedule(runtime: Runtime, send_at: str, content: str) -> dict[str, Any]:
    answer = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": content, "sendAt": send_at},
        headers=auth("alice"),
    )
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def delayed(runtime: Runtime, queue: str) -> int:
    metrics = runtime.http.get("/api/messages/queue/metrics", headers=ADMIN).json()
    return int(metrics["queues"][queue]["delayed"])


def restart_every_process(runtime: Runtime) -> None:
    for role in ("relay", "worker", "projections"):
        runtime.processes[role].stop()
    runtime.start_role("serve", "--port", str(runtime.port))
    for role in ("relay", "worker", "projections"):
        runtime.start_role(role)
    wait_for(runtime._ready, 60, "the API to be ready again")


def test_a_scheduled_send_is_held_until_due_through_a_restart_and_sent_once(
    runtime: Runtime, pg_schema: str
) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=25)
    answer = schedule(runtime, rfc3339(due), "take the 9 o'clock dose")
    message = answer["message"]
    mid = message["id"]
    assert message["status"] == "scheduled"
    assert message["sendAt"] == rfc3339(due)
    assert [j["jobId"] for j in answer["queue"]["jobs"]] == [
        f"MESSAGE_DELIVERY:{mid}:b0",
        f"MESSAGE_INDEXING:{mid}:index",
    ]
    later = schedule(runtime, rfc3339(due + timedelta(days=2)), "follow-up visit")
    later_id = later["message"]["id"]

    # Held: counted as delayed, invisible to the recipient, nothing run for it.
    wait_for(lambda: delayed(runtime, "MESSAGE_DELIVERY") == 2, 30, "two held deliveries")
    assert delayed(runtime, "MESSAGE_INDEXING") == 2
    assert runtime.http.get(f"/api/messages/{mid}", headers=auth("bob")).status_code == 404
    cid = message["conversationId"]

    def page(user: str) -> list[str]:
        answer = runtime.http.get(f"/api/conversations/{cid}/messages", headers=auth(user))
        return [m["id"] for m in answer.json()["items"]]

    wait_for(lambda: len(page("alice")) == 2, 30, "the sender's page to show both")
    assert page("bob") == []
    assert runtime.message("alice", mid)["status"] == "scheduled"

    restart_every_process(runtime)
    assert datetime.now(UTC) < due, "the restart took longer than the schedule's margin"
    assert events(pg_schema, mid, "Delivered") == 0
    assert events(pg_schema, mid, "Indexed") == 0

    done = runtime.wait_done("alice", mid, timeout=60)
    assert done["status"] == "delivered" and done["sendAt"] == rfc3339(due)
    [(delivered_at,)] = sql(
        pg_schema, "SELECT delivered_at FROM message_recipients WHERE message_id = %s", mid
    )
    assert delivered_at >= due
    assert events(pg_schema, mid, "Delivered") == 1
    assert events(pg_schema, mid, "Indexed") == 1
    assert events(pg_schema, mid, "Notified") == 1
    assert runtime.message("bob", mid)["content"] == "take the 9 o'clock dose"
    assert mid in page("bob") and later_id not in page("bob")
    assert delayed(runtime, "MESSAGE_DELIVERY") == 1  # the later one, still held

    # Its delivery counts as completed, its latency from when it was due (not sent).
    def delivery_figures() -> dict[str, Any] | None:
        metrics = runtime.http.get("/api/messages/queue/metrics", headers=ADMIN).json()
        figures: dict[str, Any] = metrics["queues"]["MESSAGE_DELIVERY"]
        return figures if figures["completed"] == 1 else None

    figures = wait_for(delivery_figures, 30, "the delivery counted as completed")
    # From when it was due, so at most the time since then (from the send: 25 s more).
    since_due_ms = (datetime.now(UTC) - due).total_seconds() * 1000
    assert figures["p50Ms"] is not None and figures["p50Ms"] <= since_due_ms

    # Too late to cancel what was sent; only its sender may cancel.
    sent_cancel = runtime.http.delete(f"/api/messages/{mid}", headers=auth("alice"))
    assert sent_cancel.status_code == 409, sent_cancel.text
    assert sent_cancel.json()["error"]["code"] == "conflict"
    assert runtime.http.delete(f"/api/messages/{mid}", headers=auth("bob")).status_code == 403

    # The later one: hidden from its recipient and from strangers, cancelled by its sender.
    assert runtime.http.delete(f"/api/messages/{later_id}", headers=auth("bob")).status_code == 404
    other_tenant = auth("alice", tenant="t2")
    assert runtime.http.delete(f"/api/messages/{later_id}", headers=other_tenant).status_code == 404
    cancelled = runtime.http.delete(f"/api/messages/{later_id}", headers=auth("alice"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    again = runtime.http.delete(f"/api/messages/{later_id}", headers=auth("alice"))
    assert again.status_code == 409
    wait_for(lambda: delayed(runtime, "MESSAGE_DELIVERY") == 0, 30, "the held jobs dropped")
    assert delayed(runtime, "MESSAGE_INDEXING") == 0
    wait_for(
        lambda: runtime.message("alice", later_id)["status"] == "cancelled",
        30,
        "the read model to show it cancelled",
    )
    assert sql(pg_schema, "SELECT status FROM messages WHERE id = %s", later_id) == [("cancelled",)]
    assert runtime.http.get(f"/api/messages/{later_id}", headers=auth("bob")).status_code == 404


def test_a_send_that_is_not_sent_at_once_cannot_be_cancelled(runtime: Runtime) -> None:
    answer = runtime.http.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "now"}, headers=auth("alice")
    )
    assert answer.status_code == 202
    mid = answer.json()["message"]["id"]
    assert answer.json()["message"]["sendAt"] is None
    refused = runtime.http.delete(f"/api/messages/{mid}", headers=auth("alice"))
    assert refused.status_code == 409
    missing = runtime.http.delete(
        "/api/messages/00000000-0000-4000-8000-000000000000", headers=auth("alice")
    )
    assert missing.status_code == 404


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"sendAt": "2020-01-01T00:00:00Z"}, "sendAt"),  # in the past
    ({"sendAt": "2099-01-01T00:00:00Z"}, "sendAt"),  # more than 30 days ahead
    ({"sendAt": "2030-01-01T09:00:00"}, "sendAt"),  # no offset
    ({"sendAt": "next tuesday"}, "sendAt"),
    ({"sendAt": 1893488400}, "sendAt"),
    ({"priority": "urgent"}, "priority"),
]


def test_a_malformed_schedule_or_priority_is_refused(runtime: Runtime) -> None:
    for fields, field in MALFORMED:
        answer = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "hi", **fields},
            headers=auth("alice"),
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [field], fields
        assert error["details"][0]["issue"], error


def test_an_encrypted_scheduled_send_is_sealed_for_its_recipients_only_when_due(
    runtime: Runtime, pg_schema: str
) -> None:
    register_keys(runtime, "alice", "bob")
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    text = "INR 4.2: hold warfarin tonight"
    answer = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": text, "encrypted": True, "sendAt": rfc3339(due)},
        headers=auth("alice"),
    )
    assert answer.status_code == 202, answer.text
    mid = answer.json()["message"]["id"]
    assert answer.json()["message"]["status"] == "scheduled"
    assert answer.json()["queue"]["jobs"][0]["jobId"] == f"MESSAGE_ENCRYPTION:{mid}:seal"
    sealed = seal(
        b"end to end, later",
        b"aad",
        {user: public_pem(user) for user in ("alice", "bob")},
    )
    client = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "sealed": sealed, "sendAt": rfc3339(due)},
        headers=auth("alice"),
    )
    assert client.status_code == 202, client.text
    client_id = client.json()["message"]["id"]
    assert client.json()["message"]["status"] == "scheduled"
    assert client.json()["message"]["encryptionMetadata"] is None

    def holders(message_id: str) -> list[tuple[str, str]]:
        """The holders of the message's data key (its digest and search rows are not keys)."""
        rows = sql(
            pg_schema,
            "SELECT holder_type, holder FROM key_vault "
            "WHERE message_id = %s AND holder_type IN ('user', 'service')",
            message_id,
        )
        return sorted((str(kind), str(holder)) for (kind, holder) in rows)

    wait_for(lambda: delayed(runtime, "MESSAGE_ENCRYPTION") == 2, 30, "two held seal jobs")
    # Before it is due: sealed under the service's key only; nothing for bob.
    assert holders(mid) and all(kind == "service" for kind, _ in holders(mid)), holders(mid)
    assert events(pg_schema, mid, "Encrypted") == 0
    assert events(pg_schema, client_id, "Encrypted") == 0
    early = runtime.http.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert early.status_code == 404
    assert datetime.now(UTC) < due, "the checks took longer than the schedule's margin"

    runtime.wait_done("alice", mid, timeout=60)
    assert ("user", "bob") in holders(mid)
    assert open_envelope("bob", envelope(runtime, "bob", mid)).decode() == text
    assert events(pg_schema, mid, "Encrypted") == 1
    done = runtime.wait_done("alice", client_id, timeout=60)
    assert done["encryptionMetadata"]["iv"] == sealed["iv"]
    assert open_envelope("bob", envelope(runtime, "bob", client_id)) == b"end to end, later"
    assert events(pg_schema, client_id, "Delivered") == 1


def test_a_scheduled_send_on_the_embedded_runtime(embedded: Runtime) -> None:
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    body = {"recipientId": "bob", "content": "embedded, later", "priority": "high"}
    answer = embedded.http.post(
        "/api/messages/direct", json={**body, "sendAt": rfc3339(due)}, headers=auth("alice")
    )
    assert answer.status_code == 202, answer.text
    mid = answer.json()["message"]["id"]
    wait_for(lambda: delayed(embedded, "MESSAGE_DELIVERY") == 1, 30, "the held delivery")
    assert embedded.message("alice", mid)["status"] == "scheduled"
    assert datetime.now(UTC) < due
    done = embedded.wait_done("alice", mid, timeout=60)
    assert done["status"] == "delivered"
    assert datetime.fromisoformat(embedded.message("bob", mid)["updatedAt"]) >= due
