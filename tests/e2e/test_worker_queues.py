"""`courier worker --queues A,B [--concurrency N]`: a worker process runs only those queues."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.e2e.harness import Runtime, auth, wait_for


def send(runtime: Runtime) -> str:
    answer = runtime.http.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "hi"}, headers=auth("alice")
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["message"]["id"])


def test_a_worker_of_some_queues_leaves_the_others_to_another(services: Runtime) -> None:
    services.processes["worker"].stop()
    services.start_role("worker", "--queues", "MESSAGE_INDEXING", "--concurrency", "2")
    message_id = send(services)

    def indexed() -> dict[str, Any] | None:
        message = services.message("alice", message_id)
        return message if message["indexed"] else None

    message = wait_for(indexed, 30, "the message indexed by the indexing-only worker")
    assert message["status"] == "accepted"  # nobody runs MESSAGE_DELIVERY yet
    assert message["deliveredCount"] == 0

    services.start_role(
        "worker", "--queues", "message_delivery,MESSAGE_NOTIFICATION", name="delivery-worker"
    )
    done = services.wait_done("alice", message_id)
    assert done["status"] == "delivered" and done["notified"]


def test_an_unknown_queue_is_refused_with_the_names_to_choose_from() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "interfaces.cli", "worker", "--queues", "MESSAGE_DELIVERY,NOPE"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown queue NOPE" in result.stderr
    assert "MESSAGE_INDEXING" in result.stderr
