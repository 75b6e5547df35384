"""One visibility rule on every read path (docs/API.md §3): a user sees the messages they
sent or were a recipient of. Someone added to a group later sees nothing sent before."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import Runtime, auth, connected, wait_for

pytestmark = pytest.mark.e2e


def test_a_user_added_to_a_group_sees_none_of_the_earlier_messages(runtime: Runtime) -> None:
    http = runtime.http
    # The newcomer's cursor from before anything was sent: a backlog from here would hold
    # every earlier message if the rule were not applied to it.
    early_socket = connected(runtime.ws("porter"))
    cursor = early_socket.of_type("ready")[0]["cursor"]
    early_socket.close()

    conversation = http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["nurse"], "title": "Ward 5"},
        headers=auth("lead"),
    ).json()
    cid = conversation["id"]

    def send(sender: str, content: str) -> str:
        response = http.post(
            "/api/messages/group",
            json={"conversationId": cid, "content": content},
            headers=auth(sender),
        )
        assert response.status_code == 202, response.text
        message_id: str = response.json()["message"]["id"]
        return message_id

    earlier = [send("lead", "potassium result for bed 4"), send("nurse", "potassium noted")]
    for message_id in earlier:
        runtime.wait_done("lead", message_id)
    added = http.post(
        f"/api/conversations/{cid}/participants", json={"userIds": ["porter"]}, headers=auth("lead")
    )
    assert added.status_code == 200, added.text
    later = send("lead", "potassium recheck at noon")
    runtime.wait_done("lead", later)

    # The conversation page (every page of it).
    page = http.get(f"/api/conversations/{cid}/messages", headers=auth("porter"))
    assert page.status_code == 200, page.text
    assert [m["id"] for m in page.json()["items"]] == [later]
    assert page.json()["nextCursor"] is None
    one = http.get(f"/api/conversations/{cid}/messages?limit=1", headers=auth("porter")).json()
    assert [m["id"] for m in one["items"]] == [later] and one["nextCursor"] is None
    # Those who were there still see everything.
    everything = http.get(f"/api/conversations/{cid}/messages", headers=auth("nurse")).json()
    assert {m["id"] for m in everything["items"]} == {*earlier, later}

    # Fetching, the envelope, marking read: as if the messages did not exist.
    for message_id in earlier:
        for method, path in (
            ("GET", f"/api/messages/{message_id}"),
            ("GET", f"/api/messages/{message_id}/envelope"),
            ("POST", f"/api/messages/{message_id}/read"),
        ):
            answer = http.request(method, path, headers=auth("porter"))
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
    assert http.get(f"/api/messages/{later}", headers=auth("porter")).status_code == 200

    # Search, in the whole tenant and in this conversation.
    def found(user: str, **params: str) -> list[str]:
        answer = http.get("/api/search", params={"q": "potassium", **params}, headers=auth(user))
        assert answer.status_code == 200, answer.text
        return [m["id"] for m in answer.json()["items"]]

    assert wait_for(lambda: found("porter"), 10, "the later message to be findable") == [later]
    assert found("porter", conversationId=cid) == [later]
    assert set(found("nurse")) == {*earlier, later}

    # The WebSocket: the backlog since a cursor from before, then status frames of the
    # conversation, which name only messages the newcomer may see.
    back = connected(runtime.ws("porter", since=cursor))
    assert back.new_message_ids() == [later]
    back.send({"type": "subscribe", "conversationId": cid})
    wait_for(lambda: back.of_type("subscribed"), 10, "the subscription")
    for message_id in (*earlier, later):
        read = http.post(f"/api/messages/{message_id}/read", headers=auth("nurse"))
        assert read.status_code in (200, 403), read.text  # 403: the nurse's own message

    def read_receipts() -> list[dict[str, Any]]:
        return [f for f in back.of_type("message.status") if f["event"] == "Read"]

    wait_for(read_receipts, 10, "the read receipt of the later message")
    back.send({"type": "ping"})
    wait_for(lambda: back.of_type("pong"), 10, "the pong after every frame")
    assert {f["messageId"] for f in back.of_type("message.status")} == {later}
    assert back.new_message_ids() == [later]
    back.close()
