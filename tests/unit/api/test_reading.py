"""The HTTP API: reading messages and searching them."""

from __future__ import annotations

import uuid
from uuid import UUID

from starlette.testclient import TestClient

from tests.unit.api.fakes import (
    TENANT,
    FakeContainer,
    auth,
    error_code,
    send_direct,
)


def test_reading_a_message(client: TestClient) -> None:
    mid = send_direct(client).json()["message"]["id"]
    r = client.get(f"/api/messages/{mid}", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json()["id"] == mid
    r = client.post(f"/api/messages/{mid}/read", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json()["id"] == mid
    r = client.post(f"/api/messages/{mid}/read", headers=auth("alice"))
    assert r.status_code == 403
    assert error_code(r) == "forbidden"


def test_messages_that_cannot_be_seen_are_not_found(client: TestClient) -> None:
    mid = send_direct(client).json()["message"]["id"]
    for path, headers in [
        (f"/api/messages/{uuid.uuid4()}", auth()),
        ("/api/messages/not-a-uuid", auth()),
        ("/api/messages/direct", auth()),
        (f"/api/messages/{mid}", auth("carol")),
        (f"/api/messages/{mid}", auth("bob", tenant="other")),
        (f"/api/messages/{mid}/envelope", auth("bob", tenant="other")),
    ]:
        r = client.get(path, headers=headers)
        assert r.status_code == 404, path
        assert error_code(r) == "not_found"
    r = client.post(f"/api/messages/{mid}/read", headers=auth("bob", tenant="other"))
    assert r.status_code == 404


def test_search(client: TestClient, container: FakeContainer) -> None:
    cid = str(uuid.uuid4())
    r = client.get(f"/api/search?q=rounds&conversationId={cid}", headers=auth())
    assert r.status_code == 200
    assert r.json() == {"items": [{"id": "m2"}]}
    assert container.queries.last() == ("search", TENANT, "alice", "rounds", UUID(cid), 50)
    for query in ("", "?q=", "?q=" + "x" * 201, "?q=a&conversationId=zzz"):
        r = client.get(f"/api/search{query}", headers=auth())
        assert r.status_code == 422, query
