"""Deployment policies against a real server: REQUIRE_ENCRYPTION refuses plain-text
sends (422 encryption_required), and settings that would expose data stop a process at
start (smtp:// without TLS, a short JWT_SECRET), saying what to do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import FAST
from tests.e2e.harness import Runtime, auth
from tests.recipient import public_pem

pytestmark = pytest.mark.e2e


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Runtime]:
    env = {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var"), "REQUIRE_ENCRYPTION": "1"}
    runtime = Runtime("embedded", env, tmp_path).start()
    yield runtime
    runtime.stop()


def test_with_require_encryption_a_plain_send_is_422_and_an_encrypted_one_passes(
    strict: Runtime,
) -> None:
    http = strict.http
    for user in ("alice", "bob", "carol"):
        key = {"publicKeyPem": public_pem(user)}
        assert http.put("/api/keys/me", json=key, headers=auth(user)).status_code == 200

    plain = http.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "hi"}, headers=auth("alice")
    )
    assert plain.status_code == 422, plain.text
    error = plain.json()["error"]
    assert error["code"] == "encryption_required"
    assert "REQUIRE_ENCRYPTION" in error["message"] and '"encrypted": true' in error["message"]
    assert error["details"] == [
        {"field": "encrypted", "issue": "must be true, or the content sealed"}
    ]

    group = http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob", "carol"]},
        headers=auth("alice"),
    )
    assert group.status_code == 201, group.text
    body = {"conversationId": group.json()["id"], "content": "hi all", "encrypted": False}
    refused = http.post("/api/messages/group", json=body, headers=auth("alice"))
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "encryption_required")

    sealed = http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "hi", "encrypted": True},
        headers=auth("alice"),
    )
    assert sealed.status_code == 202, sealed.text
    listed = http.get(f"/api/conversations/{group.json()['id']}/messages", headers=auth("bob"))
    assert listed.status_code == 200 and listed.json()["items"] == []  # nothing was stored


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SMTP_URL": "smtp://mail.example.org:25"}, "SMTP_ALLOW_PLAINTEXT=1"),
        ({"JWT_SECRET": "too-short"}, "secrets.token_urlsafe"),
    ],
    ids=["smtp without TLS", "short JWT secret"],
)
def test_an_unsafe_setting_stops_the_server_at_start(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    runtime = Runtime("embedded", {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var")}, tmp_path)
    try:
        serve = runtime.start_role("serve", "--port", str(runtime.port), env=env)
        assert serve.proc is not None
        assert serve.proc.wait(timeout=60) != 0
        assert says in serve.output()
    finally:
        runtime.stop()
