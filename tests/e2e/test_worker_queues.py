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


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def test_the_background_roles_yield_the_cpu_to_the_api(services: Runtime) -> None:
    pids = {name: p.proc.pid for name, p in services.processes.items() if p.proc is not None}
    api = niceness(pids["serve"])  # the test's own priority: whatever CI runs it at
    for role in ("worker", "relay", "projections"):
        assert niceness(pids[role]) == min(19, api + 10), role
    services.start_role("worker", env={"BACKGROUND_NICE": "0"}, name="eager-worker")
    eager = services.processes["eager-worker"].proc
    assert eager is not None and niceness(eager.pid) == api
