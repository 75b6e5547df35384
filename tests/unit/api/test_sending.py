"""The HTTP API: sending messages, and the requests refused before anything is sent."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from interfaces.http.parsing import message_body_limit
from tests.unit.api.fakes import (
    MAX,
    PEM,
    auth,
    error_code,
    group,
    send_direct,
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_send_direct_is_accepted_with_its_first_jobs(client: TestClient) -> None:
    r = send_direct(client)
    assert r.status_code == 202
    body = r.json()
    message = body["message"]
    mid = message["id"]
    assert message["senderId"] == "alice"
    assert message["recipientIds"] == ["bob"]
    assert message["content"] == "hello"
    assert message["type"] == "direct"
    assert message["isEncrypted"] is False
    assert message["status"] == "accepted"
    assert message["recipientCount"] == 1
    assert body["queue"]["jobs"] == [
        {"queue": "MESSAGE_DELIVERY", "jobId": f"MESSAGE_DELIVERY:{mid}:b0", "state": "scheduled"},
        {
            "queue": "MESSAGE_INDEXING",
            "jobId": f"MESSAGE_INDEXING:{mid}:index",
            "state": "scheduled",
        },
    ]
    r = send_direct(client, index=False, notify=False)
    jobs = [j["queue"] for j in r.json()["queue"]["jobs"]]
    assert jobs == ["MESSAGE_DELIVERY"]


def test_send_group_is_accepted_with_a_split_job(client: TestClient) -> None:
    cid = group(client)
    r = client.post(
        "/api/messages/group",
        json={"conversationId": cid, "content": "rounds at 9"},
        headers=auth(),
    )
    assert r.status_code == 202
    message = r.json()["message"]
    mid = message["id"]
    assert message["conversationId"] == cid
    assert message["recipientCount"] == 2
    assert r.json()["queue"]["jobs"][0]["jobId"] == f"BATCH_MESSAGE_SENDING:{mid}:split"
    r = client.post(
        "/api/messages/group", json={"conversationId": cid, "content": "x"}, headers=auth("mallory")
    )
    assert r.status_code == 404
    r = client.post(
        "/api/messages/group", json={"conversationId": "nope", "content": "x"}, headers=auth()
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "conversationId"


def test_a_client_message_id_makes_a_send_idempotent(client: TestClient) -> None:
    first = send_direct(client, clientMessageId="c-1")
    again = send_direct(client, clientMessageId="c-1")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert again.json()["queue"] == first.json()["queue"]
    changed = send_direct(client, clientMessageId="c-1", content="something else")
    assert changed.status_code == 409
    assert error_code(changed) == "conflict"


def test_content_is_limited_in_utf8_bytes(client: TestClient) -> None:
    at_limit = "é" * (MAX // 2)
    assert len(at_limit.encode()) == MAX
    assert send_direct(client, content=at_limit).status_code == 202
    r = send_direct(client, content=at_limit + "x")
    assert r.status_code == 413
    assert error_code(r) == "content_too_large"
    escaped = b"\\u0001" * MAX  # at the limit, however it is escaped
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "' + escaped + b'"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 202
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "' + b"a" * message_body_limit(MAX) + b'"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert error_code(r) == "content_too_large"


def test_encrypted_sends(client: TestClient) -> None:
    r = send_direct(client, encrypted=True)
    assert r.status_code == 422
    assert error_code(r) == "recipient_key_missing"
    for user in ("alice", "bob"):
        r = client.put("/api/keys/me", json={"publicKeyPem": PEM.format(user)}, headers=auth(user))
        assert r.status_code == 200
    r = send_direct(client, encrypted=True)
    assert r.status_code == 202
    message = r.json()["message"]
    assert message["isEncrypted"] is True
    assert message["content"] is None
    assert r.json()["queue"]["jobs"][0]["jobId"] == f"MESSAGE_ENCRYPTION:{message['id']}:seal"


def test_a_sealed_message_and_its_envelope(client: TestClient) -> None:
    sealed = {
        "ciphertext": _b64(b"opaque"),
        "iv": _b64(b"i" * 12),
        "authTag": _b64(b"t" * 16),
        "wrappedKeys": {"alice": _b64(b"ka"), "bob": _b64(b"kb")},
    }
    r = send_direct(client, content=None, sealed=sealed)
    assert r.status_code == 202, r.text
    mid = r.json()["message"]["id"]
    assert r.json()["message"]["isEncrypted"] is True
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 200
    envelope = r.json()
    assert envelope["wrappedKey"] == _b64(b"kb")
    assert envelope["ciphertext"] == sealed["ciphertext"]
    assert envelope["algorithm"] == "AES-256-GCM"
    assert client.get(f"/api/messages/{mid}/envelope", headers=auth("carol")).status_code == 404
    r = send_direct(client, content=None, sealed=sealed, encrypted=False)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "encrypted"
    r = send_direct(client, sealed=sealed)
    assert r.status_code == 422
    r = send_direct(client, content=None, sealed={**sealed, "iv": "not base64!"})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "sealed.iv"
    for name, size in (("iv", 16), ("authTag", 12)):
        r = send_direct(client, content=None, sealed={**sealed, name: _b64(b"x" * size)})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == f"sealed.{name}"
    r = send_direct(client, content=None, sealed={**sealed, "wrappedKeys": {"alice": _b64(b"ka")}})
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "sealed.wrappedKeys", "issue": "missing for bob"}
    ]


def test_shredding_needs_an_admin_and_turns_the_envelope_into_410(client: TestClient) -> None:
    for user in ("alice", "bob"):
        client.put("/api/keys/me", json={"publicKeyPem": PEM.format(user)}, headers=auth(user))
    mid = send_direct(client, encrypted=True).json()["message"]["id"]
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 409 and error_code(r) == "not_ready"
    shred = f"/api/messages/{mid}/shred"
    assert client.post(shred, json={}, headers=auth("alice")).status_code == 403
    admin = auth("dpo", roles=["admin"])
    r = client.post(shred, json={"reason": "because"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "reason"
    r = client.post(shred, json={"reason": "erasure"}, headers=admin)
    assert r.status_code == 200
    assert r.json() == {"messageId": mid, "shredded": True, "reason": "erasure", "keysDestroyed": 1}
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 410 and error_code(r) == "content_shredded"
    assert "destroyed" in r.json()["error"]["message"]
    assert client.get(f"/api/messages/{mid}", headers=auth("bob")).status_code == 200
    other_tenant = auth("dpo", tenant="other", roles=["admin"])
    assert client.post(shred, json={}, headers=other_tenant).status_code == 404
    plain = send_direct(client).json()["message"]["id"]
    r = client.post(f"/api/messages/{plain}/shred", json={}, headers=admin)
    assert r.status_code == 422


def test_malformed_bodies(client: TestClient) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    for raw in (b"{", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"[" * 5000):
        r = client.post("/api/messages/direct", content=raw, headers=headers)
        assert r.status_code == 400, raw[:10]
        assert error_code(r) == "invalid_json"
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "x"}',
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    assert error_code(r) == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "x"}, "recipientId"),
        ({"recipientId": "bob", "content": "x", "encrypted": "yes"}, "encrypted"),
        ({"recipientId": "bob", "content": "x", "notify": "true"}, "notify"),
        ({"recipientId": "bob", "content": "x", "surprise": 1}, "surprise"),
        ({"recipientId": "bob"}, "content"),
        ({"recipientId": "bob", "content": 7}, "content"),
        ({"recipientId": "bob bob", "content": "x"}, "recipientId"),
        ({"recipientId": "bob", "content": "x", "clientMessageId": ""}, "clientMessageId"),
        ({"recipient_id": "bob", "content": "x"}, "recipientId"),
    ],
)
def test_invalid_send_bodies_are_422_with_details(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/api/messages/direct", json=body, headers=auth())
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert all(set(d) == {"field", "issue"} for d in error["details"])
    assert "yes" not in json.dumps(error["details"])


@pytest.mark.parametrize(
    "body",
    [
        {"type": "channel", "participantIds": ["bob"]},
        {"type": "group", "participantIds": []},
        {"type": "group", "participantIds": ["bob"], "title": "t" * 201},
        {"type": "group", "participantIds": "bob"},
    ],
)
def test_invalid_conversation_bodies_are_422(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/conversations", json=body, headers=auth())
    assert r.status_code == 422
