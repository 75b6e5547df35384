"""The embedded default keeps its data across a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import FAST
from tests.e2e.harness import Runtime, auth

pytestmark = pytest.mark.e2e


def test_embedded_data_survives_a_restart(tmp_path: Path) -> None:
    env = {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var")}
    first = Runtime("embedded", env, tmp_path).start()
    try:
        sent = first.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "kept", "clientMessageId": "keep-1"},
            headers=auth("alice"),
        )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["message"]["id"]
        first.wait_done("alice", message_id)
    finally:
        first.stop()

    second = Runtime("embedded", env, tmp_path).start()
    try:
        again = second.message("bob", message_id)
        assert again["content"] == "kept" and again["status"] == "delivered"
        repeat = second.http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "kept", "clientMessageId": "keep-1"},
            headers=auth("alice"),
        )
        assert repeat.status_code == 200 and repeat.json()["message"]["id"] == message_id
        page = second.http.get(
            f"/api/conversations/{again['conversationId']}/messages", headers=auth("bob")
        )
        assert [m["id"] for m in page.json()["items"]] == [message_id]
    finally:
        second.stop()
