"""A worker killed mid-run loses nothing and shows no delivery twice."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.harness import Runtime, auth, connected, wait_for

pytestmark = pytest.mark.e2e


def test_kill_9_worker_during_200_messages(services: Runtime) -> None:
    bob = connected(services.ws("bob"))
    ids: list[str] = []
    for i in range(200):
        response = services.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": f"round {i}"},
            headers=auth("alice"),
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["message"]["id"])
        if i == 60:
            services.processes["worker"].kill()
        if i == 120:
            services.start_role("worker")

    conversation_id = services.message("alice", ids[0])["conversationId"]

    def all_delivered() -> bool:
        page = services.http.get(
            f"/api/conversations/{conversation_id}/messages?limit=200", headers=auth("alice")
        )
        items = page.json()["items"]
        return len(items) == 200 and all(m["status"] == "delivered" for m in items)

    wait_for(all_delivered, 120, "all 200 messages to be delivered")
    wait_for(lambda: len(set(bob.new_message_ids())) == 200, 30, "200 distinct frames")
    counts = Counter(bob.new_message_ids())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [m for m, c in counts.items() if c > 1]
    bob.close()
