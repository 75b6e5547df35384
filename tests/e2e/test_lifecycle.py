"""A message's whole life over real HTTP and WebSocket, on both runtimes."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Runtime, auth, connected, wait_for

pytestmark = pytest.mark.e2e


def test_direct_message_reaches_a_connected_recipient(runtime: Runtime) -> None:
    bob = connected(runtime.ws("bob"))
    alice = connected(runtime.ws("alice"))
    sent = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "hello bob", "clientMessageId": "c-1"},
        headers=auth("alice"),
    )
    assert sent.status_code == 202, sent.text
    body = sent.json()
    message_id = body["message"]["id"]
    jobs = {job["queue"]: job for job in body["queue"]["jobs"]}
    assert jobs["MESSAGE_DELIVERY"]["jobId"] == f"MESSAGE_DELIVERY:{message_id}:b0"
    assert jobs["MESSAGE_INDEXING"]["state"] == "scheduled"

    frames = wait_for(lambda: bob.of_type("message.new"), 10, "bob's message.new frame")
    assert frames[0]["message"]["id"] == message_id
    assert frames[0]["message"]["content"] == "hello bob"
    assert frames[0]["cursor"]

    done = runtime.wait_done("alice", message_id)
    assert done["deliveredCount"] == 1 and done["recipientCount"] == 1
    statuses = wait_for(lambda: alice.of_type("message.status"), 10, "alice's status frames")
    assert any(f["messageId"] == message_id for f in statuses)

    # The read receipt reaches the sender live.
    read = runtime.http.post(f"/api/messages/{message_id}/read", headers=auth("bob"))
    assert read.status_code == 200, read.text
    receipt = wait_for(
        lambda: [f for f in alice.of_type("message.status") if f["event"] == "Read"],
        10,
        "alice's read receipt",
    )
    assert receipt[0]["messageId"] == message_id and receipt[0]["readBy"] == "bob"

    again = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "hello bob", "clientMessageId": "c-1"},
        headers=auth("alice"),
    )
    assert again.status_code == 200 and again.json()["message"]["id"] == message_id
    bob.close()
    alice.close()


def test_group_message_to_120_recipients_in_three_batches(runtime: Runtime) -> None:
    people = [f"nurse-{i:03d}" for i in range(120)]
    created = runtime.http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": people, "title": "District nurses"},
        headers=auth("lead"),
    )
    assert created.status_code == 201, created.text
    conversation = created.json()
    assert len(conversation["participantIds"]) == 121
    listener = connected(runtime.ws("nurse-077"))

    sent = runtime.http.post(
        "/api/messages/group",
        json={"conversationId": conversation["id"], "content": "flu clinic moved to room 4"},
        headers=auth("lead"),
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]
    assert sent.json()["queue"]["jobs"][0]["jobId"] == f"BATCH_MESSAGE_SENDING:{message_id}:split"

    done = runtime.wait_done("lead", message_id)
    assert done["deliveredCount"] == 120 and done["recipientCount"] == 120
    assert wait_for(lambda: listener.new_message_ids(), 10, "a message.new frame") == [message_id]

    page = runtime.http.get(
        f"/api/conversations/{conversation['id']}/messages", headers=auth("nurse-001")
    )
    assert page.status_code == 200
    assert [m["id"] for m in page.json()["items"]] == [message_id]
    listener.close()


def test_another_tenant_sees_nothing(runtime: Runtime) -> None:
    sent = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "private"},
        headers=auth("alice", "clinic-a"),
    )
    message_id = sent.json()["message"]["id"]
    outsider = runtime.http.get(f"/api/messages/{message_id}", headers=auth("alice", "clinic-b"))
    assert outsider.status_code == 404
    assert outsider.json()["error"]["code"] == "not_found"
