"""The HTTP API: conversations and their members."""

from __future__ import annotations

from uuid import UUID

from starlette.testclient import TestClient

from tests.unit.api.fakes import (
    TENANT,
    FakeContainer,
    auth,
    error_code,
    group,
)


def test_create_a_group_then_add_and_remove_participants(client: TestClient) -> None:
    r = client.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob"], "title": "night shift"},
        headers=auth(),
    )
    assert r.status_code == 201
    conv = r.json()
    assert set(conv) == {"id", "type", "participantIds", "title", "createdAt"}
    assert conv["type"] == "group"
    assert conv["participantIds"] == ["alice", "bob"]
    assert conv["title"] == "night shift"
    url = f"/api/conversations/{conv['id']}/participants"
    r = client.post(url, json={"userIds": ["carol", "dan"]}, headers=auth())
    assert r.status_code == 200
    assert r.json()["participantIds"] == ["alice", "bob", "carol", "dan"]
    r = client.delete(f"{url}/carol", headers=auth())
    assert r.status_code == 200
    assert r.json()["participantIds"] == ["alice", "bob", "dan"]
    assert client.delete(f"{url}/carol", headers=auth()).status_code == 404
    assert client.delete(f"{url}/not%20a%20user", headers=auth()).status_code == 404


def test_a_direct_conversation_is_fixed(client: TestClient) -> None:
    body = {"type": "direct", "participantIds": ["bob"]}
    first = client.post("/api/conversations", json=body, headers=auth())
    again = client.post("/api/conversations", json=body, headers=auth())
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    url = f"/api/conversations/{first.json()['id']}/participants"
    r = client.post(url, json={"userIds": ["carol"]}, headers=auth())
    assert r.status_code == 422
    assert error_code(r) == "validation_error"


def test_conversations_of_others_are_not_found(client: TestClient) -> None:
    cid = group(client)
    url = f"/api/conversations/{cid}/participants"
    for headers in (auth("mallory"), auth("alice", tenant="other")):
        r = client.post(url, json={"userIds": ["mallory"]}, headers=headers)
        assert r.status_code == 404
        assert error_code(r) == "not_found"
    r = client.post(
        "/api/conversations/not-a-uuid/participants", json={"userIds": ["x"]}, headers=auth()
    )
    assert r.status_code == 404
    assert error_code(r) == "not_found"


def test_conversation_messages_checks_membership_then_asks_the_read_side(
    client: TestClient, container: FakeContainer
) -> None:
    cid = group(client)
    r = client.get(f"/api/conversations/{cid}/messages", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json() == {"items": [{"id": "m1"}], "nextCursor": "next-1"}
    assert container.queries.last() == ("page", TENANT, "bob", UUID(cid), 50, None)
    r = client.get(f"/api/conversations/{cid}/messages?limit=200&before=c1", headers=auth())
    assert r.status_code == 200
    assert container.queries.last() == ("page", TENANT, "alice", UUID(cid), 200, "c1")
    calls = len(container.queries.calls)
    for bad in ("0", "201", "ten", "-1", "9" * 50):
        r = client.get(f"/api/conversations/{cid}/messages?limit={bad}", headers=auth())
        assert r.status_code == 422, bad
        assert r.json()["error"]["details"][0]["field"] == "limit"
    for who in (auth("mallory"), auth(tenant="other")):
        assert client.get(f"/api/conversations/{cid}/messages", headers=who).status_code == 404
    assert client.get("/api/conversations/123/messages", headers=auth()).status_code == 404
    assert len(container.queries.calls) == calls
