"""Hostile and mistaken requests against a real server: clear 4xx JSON, never a 5xx."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest

from tests.e2e.harness import JWT_SECRET, Runtime, auth

pytestmark = pytest.mark.e2e


def _error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in response.text


def test_bad_requests_answer_clear_client_errors(embedded: Runtime) -> None:
    http = embedded.http
    headers = {**auth("alice"), "Content-Type": "application/json"}
    _error(http.post("/api/messages/direct", content=b"{not json", headers=headers), 400)
    _error(http.post("/api/messages/direct", json={"content": "x"}, headers=auth("alice")), 422)
    _error(
        http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "x", "encrypted": "yes"},
            headers=auth("alice"),
        ),
        422,
    )
    _error(
        http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "x", "surprise": 1},
            headers=auth("alice"),
        ),
        422,
    )
    _error(http.get(f"/api/messages/{uuid.uuid4()}", headers=auth("alice")), 404, "not_found")
    _error(http.get("/api/messages/not-a-uuid", headers=auth("alice")), 404, "not_found")
    _error(http.get("/api/nowhere", headers=auth("alice")), 404)
    too_big = "x" * (65536 + 1)
    _error(
        http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": too_big},
            headers=auth("alice"),
        ),
        413,
    )


def test_tokens_that_must_not_pass(embedded: Runtime) -> None:
    http = embedded.http
    now = int(time.time())
    expired = jwt.encode(
        {"sub": "a", "tenant": "t1", "roles": ["user"], "exp": now - 600}, JWT_SECRET, "HS256"
    )
    forged = jwt.encode({"sub": "a", "tenant": "t1", "exp": now + 600}, "wrong-secret" * 4, "HS256")
    no_exp = jwt.encode({"sub": "a", "tenant": "t1"}, JWT_SECRET, "HS256")
    unsigned = jwt.encode({"sub": "a", "tenant": "t1", "exp": now + 600}, None, "none")
    for value in (expired, forged, no_exp, unsigned, "garbage"):
        response = http.get(
            f"/api/messages/{uuid.uuid4()}", headers={"Authorization": f"Bearer {value}"}
        )
        _error(response, 401, "unauthorized")
    _error(http.get(f"/api/messages/{uuid.uuid4()}"), 401, "unauthorized")


def test_another_tenants_ids_are_not_found(embedded: Runtime) -> None:
    http = embedded.http
    conversation = http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob"]},
        headers=auth("alice", "clinic-a"),
    ).json()
    cid = conversation["id"]
    intruder = auth("alice", "clinic-b")
    _error(http.get(f"/api/conversations/{cid}/messages", headers=intruder), 404, "not_found")
    _error(
        http.post(
            f"/api/conversations/{cid}/participants", json={"userIds": ["eve"]}, headers=intruder
        ),
        404,
        "not_found",
    )
    _error(
        http.post(
            "/api/messages/group", json={"conversationId": cid, "content": "hi"}, headers=intruder
        ),
        404,
        "not_found",
    )
