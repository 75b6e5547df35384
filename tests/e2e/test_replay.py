"""Replay: a corrupted read table is rebuilt beside the live one and swapped in, while
the API keeps answering; afterwards it answers exactly what it answered before."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.settings import load
from projections.catalog import MESSAGES
from projections.replay import rebuild
from tests.conftest import PG_DSN
from tests.e2e.harness import ROOT, Runtime, auth, wait_for

pytestmark = pytest.mark.e2e


def page(runtime: Runtime, conversation_id: str, user: str = "alice") -> dict[str, Any]:
    response = runtime.http.get(
        f"/api/conversations/{conversation_id}/messages",
        params={"limit": 200},
        headers=auth(user),
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(runtime: Runtime, conversation_id: str, count: int) -> dict[str, Any] | None:
    body = page(runtime, conversation_id)
    done = [
        m for m in body["items"] if m["status"] == "delivered" and m["notified"] and m["indexed"]
    ]
    return body if len(done) == count else None


class Hammer(threading.Thread):
    """Keeps asking for pages, noting when each answer came and how."""

    def __init__(self, runtime: Runtime, conversations: list[str]) -> None:
        super().__init__(daemon=True)
        self.runtime = runtime
        self.conversations = conversations
        self.stopping = threading.Event()
        self.answers: list[tuple[float, int]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            for cid in self.conversations:
                response = self.runtime.http.get(
                    f"/api/conversations/{cid}/messages", headers=auth("alice")
                )
                self.answers.append((time.monotonic(), response.status_code))


def indexes_of(schema: str) -> set[str]:
    with psycopg.connect(PG_DSN) as conn:
        rows = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    return {name for (name,) in rows}


def courier(runtime: Runtime, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *args],
        env=runtime.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_restores_the_answers_while_requests_are_served(services: Runtime) -> None:
    runtime = services
    schema = runtime.env["POSTGRES_SCHEMA"]
    group = runtime.http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob", "carol", "dan"], "title": "ward 3"},
        headers=auth("alice"),
    ).json()["id"]
    direct = ""
    for n in range(15):
        sent = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": f"direct {n}"},
            headers=auth("alice"),
        )
        direct = sent.json()["message"]["conversationId"]
        runtime.http.post(
            "/api/messages/group",
            json={"conversationId": group, "content": f"group {n}"},
            headers=auth("alice"),
        )
    before = {
        cid: wait_for(lambda cid=cid: finished(runtime, cid, 15), 90, f"15 messages in {cid}")
        for cid in (direct, group)
    }

    indexes_before = indexes_of(schema)
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.messages SET status = 'failed', content = 'garbled'")
        conn.execute(f"DELETE FROM {schema}.messages WHERE content = 'garbled' AND type = 'group'")
    assert page(runtime, direct) != before[direct] and page(runtime, group)["items"] == []

    container = build(load(runtime.env), TOOL)
    hammer = Hammer(runtime, [direct, group])
    batches: list[float] = []
    try:
        hammer.start()
        wait_for(lambda: len(hammer.answers) > 5, 10, "requests before the rebuild")
        result = rebuild(
            container.engine,
            container.event_log,
            MESSAGES,
            batch=20,
            progress=lambda *_: batches.append(time.monotonic()),
            schema=schema,
        )
        swapped = time.monotonic()
        wait_for(lambda: any(t > swapped for t, _ in hammer.answers), 10, "requests after it")
    finally:
        hammer.stopping.set()
        hammer.join(timeout=10)
        container.stop()

    assert result.events > 100 and len(batches) > 5, result
    assert all(status == 200 for _, status in hammer.answers), set(hammer.answers)
    during = [t for t, _ in hammer.answers if batches[0] <= t <= swapped]
    assert during, "no request was answered while the shadow was being built"
    assert page(runtime, direct) == before[direct]
    assert page(runtime, group) == before[group]
    # The swapped-in tables have every index the live ones had (built after the bulk).
    assert indexes_of(schema) == indexes_before
    assert "messages_conversation_encrypted_idx" in indexes_before

    # The live projection carries on from the swapped-in tables.
    sent = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "after"},
        headers=auth("alice"),
    )
    fresh = sent.json()["message"]["id"]
    wait_for(lambda: page(runtime, direct)["items"][0]["id"] == fresh, 30, "the next message")

    # The command line does the same, with its progress bar; the chain is never replayed.
    done = courier(runtime, "replay", "messages", "--batch-size", "50")
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stdout and "re-applied" in done.stdout
    assert page(runtime, group) == before[group]
    refused = courier(runtime, "replay", "audit_chain")
    assert refused.returncode == 2 and "courier audit verify" in refused.stderr


def test_replay_of_the_audit_view_from_a_position(embedded: Runtime) -> None:
    runtime = embedded
    ids = []
    for n in range(4):
        sent = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": f"n{n}"},
            headers=auth("alice"),
        )
        ids.append(sent.json()["message"]["id"])
    inspector = auth("inspector", "t1", ["auditor"])

    def trail(mid: str) -> list[dict[str, Any]]:
        response = runtime.http.get(f"/api/audit/messages/{mid}/trail", headers=inspector)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    for mid in ids:
        runtime.wait_done("alice", mid)

    def projected(mid: str) -> list[dict[str, Any]] | None:
        items = trail(mid)
        return items if {"Delivered", "Notified", "Indexed"} <= {i["type"] for i in items} else None

    before = {mid: wait_for(lambda mid=mid: projected(mid), 30, "the trail") for mid in ids}
    middle = before[ids[2]][0]["position"]
    done = courier(runtime, "replay", "audit", "--from", str(middle))
    assert done.returncode == 0, done.stderr
    for mid in ids:
        after = trail(mid)
        assert after[: len(before[mid])] == before[mid]
    messages_from = courier(runtime, "replay", "messages", "--from", "5")
    assert messages_from.returncode == 2 and "from the start" in messages_from.stderr

    conversation = runtime.message("alice", ids[0])["conversationId"]
    shown = page(runtime, conversation)
    assert courier(runtime, "replay", "messages").returncode == 0
    assert page(runtime, conversation) == shown


def test_replay_of_the_queue_metrics_answers_the_same_over_http(runtime: Runtime) -> None:
    admin = auth("ops-1", "t1", ["admin"])
    group = runtime.http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob", "carol"], "title": "ward 5"},
        headers=auth("alice"),
    ).json()["id"]
    sent = []
    for n in range(4):
        direct = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": f"d{n}"},
            headers=auth("alice"),
        )
        grouped = runtime.http.post(
            "/api/messages/group",
            json={"conversationId": group, "content": f"g{n}"},
            headers=auth("alice"),
        )
        sent += [direct.json()["message"]["id"], grouped.json()["message"]["id"]]
    for mid in sent:
        runtime.wait_done("alice", mid)

    def metrics() -> dict[str, Any]:
        response = runtime.http.get("/api/messages/queue/metrics", headers=admin)
        assert response.status_code == 200, response.text
        queues: dict[str, Any] = response.json()["queues"]
        return queues

    def counted() -> dict[str, Any] | None:
        queues = metrics()
        done = {q: queues[q]["completed"] for q in ("MESSAGE_DELIVERY", "BATCH_MESSAGE_SENDING")}
        wanted = {"MESSAGE_DELIVERY": 8, "BATCH_MESSAGE_SENDING": 4}
        return queues if done == wanted and queues["MESSAGE_INDEXING"]["completed"] == 8 else None

    before = wait_for(counted, 30, "the projection to count every job")
    assert before["MESSAGE_NOTIFICATION"]["completed"] == 8
    assert before["MESSAGE_DELIVERY"]["p50Ms"] is not None

    log_figures = ("completed", "failed", "p50Ms", "p95Ms")
    answers: list[int] = []
    stopping = threading.Event()

    def keep_asking() -> None:
        while not stopping.is_set():
            answers.append(
                runtime.http.get("/api/messages/queue/metrics", headers=admin).status_code
            )

    asking = threading.Thread(target=keep_asking, daemon=True)
    asking.start()
    try:
        done = courier(runtime, "replay", "queue_metrics", "--batch-size", "10")
    finally:
        stopping.set()
        asking.join(timeout=10)
    assert done.returncode == 0, done.stderr
    assert answers and set(answers) == {200}
    after = metrics()
    for queue, figures in before.items():
        assert {k: after[queue][k] for k in log_figures} == {k: figures[k] for k in log_figures}
        # Completions age out of the last minute, whether replayed or not.
        assert after[queue]["throughputPerMinute"] <= figures["throughputPerMinute"]
