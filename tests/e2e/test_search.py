"""GET /api/search on both runtimes: PostgreSQL full text or SQLite FTS5 for plain
messages, the blind index for encrypted ones; a participant's answers only."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Runtime, auth, wait_for
from tests.recipient import public_pem

pytestmark = pytest.mark.e2e


def test_search_finds_plain_and_encrypted_messages_for_participants_only(
    runtime: Runtime,
) -> None:
    http = runtime.http
    for user in ("alice", "bob"):
        registered = http.put(
            "/api/keys/me", json={"publicKeyPem": public_pem(user)}, headers=auth(user)
        )
        assert registered.status_code == 200, registered.text

    def send(content: str, encrypted: bool) -> str:
        response = http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": content, "encrypted": encrypted},
            headers=auth("alice"),
        )
        assert response.status_code == 202, response.text
        message_id: str = response.json()["message"]["id"]
        return message_id

    plain = send("Theatre list for Thursday is now final", encrypted=False)
    secret = send("Transfusion reaction in bay 7, see notes", encrypted=True)
    runtime.wait_done("alice", plain)
    runtime.wait_done("alice", secret)

    def found(user: str, q: str, tenant: str = "t1") -> list[str]:
        response = http.get("/api/search", params={"q": q}, headers=auth(user, tenant))
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert wait_for(lambda: found("bob", "theatre"), 10, "the plain message") == [plain]
    assert found("alice", "THURSDAY") == [plain]
    assert wait_for(lambda: found("bob", "transfusion"), 10, "the secret one") == [secret]
    item = http.get("/api/search", params={"q": "bay"}, headers=auth("alice")).json()["items"]
    assert [m["id"] for m in item] == [secret] and item[0]["content"] is None
    assert found("bob", "transfus") == []  # a blind index matches whole words only
    assert found("carol", "transfusion") == [] and found("carol", "theatre") == []
    assert found("bob", "transfusion", tenant="clinic-b") == []
    assert found("bob", "theatre", tenant="clinic-b") == []
    missing = http.get("/api/search", headers=auth("bob"))
    assert missing.status_code == 422 and missing.json()["error"]["details"][0]["field"] == "q"
