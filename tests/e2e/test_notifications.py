"""Notifications end to end: preferences over HTTP, a real SMTP server and a real push
webhook as providers, the queue's retry when a provider fails, and secure messages
whose notifications say nothing of their content."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrastructure.notifiers import PLAIN_BODY, SECURE_BODY
from tests.e2e.conftest import FAST, services_env
from tests.e2e.harness import Runtime, auth, connected, wait_for
from tests.providers import HttpProvider, SmtpServer, provider_env, providers
from tests.recipient import public_pem

pytestmark = pytest.mark.e2e

PATH = "/api/users/me/notifications"
PLAIN = "Bed 12 needs a fluid balance chart"
SECRET = "Mrs Okafor's biopsy is malignant"


@pytest.fixture
def local() -> Iterator[tuple[SmtpServer, HttpProvider, HttpProvider]]:
    with providers() as running:
        yield running


@pytest.fixture(params=["embedded", pytest.param("services", marks=pytest.mark.services)])
def notifying(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    local: tuple[SmtpServer, HttpProvider, HttpProvider],
) -> Iterator[Runtime]:
    env = {**provider_env(*local), "QUEUE_MESSAGE_NOTIFICATION_BACKOFF_SECONDS": "0.2"}
    if request.param == "services":
        env.update(
            services_env(request.getfixturevalue("pg_schema"), request.getfixturevalue("redis_url"))
        )
    else:
        env.update(FAST, COURIER_DATA_DIR=str(tmp_path / "var"))
    runtime = Runtime(request.param, env, tmp_path).start()
    yield runtime
    runtime.stop()


def send(runtime: Runtime, recipient: str, content: str, encrypted: bool = False) -> str:
    response = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": recipient, "content": content, "encrypted": encrypted},
        headers=auth("alice"),
    )
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message"]["id"]
    return message_id


def about(message_id: str, mails: list[Any], pushes: list[Any]) -> tuple[list[Any], list[Any]]:
    return (
        [m for m in mails if m.message["X-Courier-Message-Id"] == message_id],
        [p for p in pushes if p.body["message"]["data"]["messageId"] == message_id],
    )


@pytest.mark.parametrize("notifying", ["embedded"], indirect=True)
def test_preferences_are_the_callers_own_and_checked(notifying: Runtime) -> None:
    http = notifying.http
    assert http.get(PATH, headers=auth("bob")).json() == {
        "channels": [],
        "email": None,
        "phone": None,
        "pushToken": None,
        "notifyWhenOnline": False,
    }
    refused = http.put(PATH, json={"channels": ["sms"]}, headers=auth("bob"))
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "phone"
    for bad in ({"channels": ["pigeon"]}, {"channels": [], "email": "no-at-sign"}):
        assert http.put(PATH, json=bad, headers=auth("bob")).status_code == 422
    chosen = {"channels": ["email"], "email": "bob@ward.test", "notifyWhenOnline": True}
    assert http.put(PATH, json=chosen, headers=auth("bob")).status_code == 200
    assert http.get(PATH, headers=auth("bob")).json()["email"] == "bob@ward.test"
    assert http.get(PATH, headers=auth("bob", "clinic-b")).json()["email"] is None
    assert http.delete(PATH, headers=auth("bob")).status_code == 204
    assert http.get(PATH, headers=auth("bob")).json()["channels"] == []
    assert "bob@ward.test" not in notifying.logs()


def test_an_offline_recipient_gets_an_email_and_a_push_and_secure_ones_say_nothing(
    notifying: Runtime, local: tuple[SmtpServer, HttpProvider, HttpProvider]
) -> None:
    smtp, push, _sms = local
    http = notifying.http
    for user in ("alice", "bob", "carol"):
        registered = http.put(
            "/api/keys/me", json={"publicKeyPem": public_pem(user)}, headers=auth(user)
        )
        assert registered.status_code == 200, registered.text
        chosen = {"channels": ["push", "email"], "email": f"{user}@ward.test", "pushToken": user}
        assert http.put(PATH, json=chosen, headers=auth(user)).status_code == 200

    plain = send(notifying, "bob", PLAIN)
    notifying.wait_done("alice", plain)

    def both() -> tuple[list[Any], list[Any]] | None:
        mails, pushes = about(plain, smtp.mails(), push.received())
        return (mails, pushes) if mails and pushes else None

    mails, pushes = wait_for(both, 30, "bob's email and push")
    # Previews are off by default (NOTIFY_PREVIEW): the providers get neither text nor sender.
    assert [m.recipients for m in mails] == [["bob@ward.test"]] and PLAIN_BODY in mails[0].body
    assert pushes[0].body["message"]["token"] == "bob"
    assert pushes[0].body["message"]["notification"] == {"title": "New message", "body": PLAIN_BODY}
    for text in ("fluid balance", "alice"):
        assert text not in mails[0].raw and text not in str(pushes[0].body)

    push.fail(503)  # the provider is down for one request: the job is retried with backoff
    secret = send(notifying, "bob", SECRET, encrypted=True)
    notifying.wait_done("alice", secret)
    mails, pushes = about(secret, smtp.mails(), push.received())
    assert len(mails) == 1 and len(pushes) == 1, "each sent once, the retry included"
    assert SECURE_BODY in mails[0].body and pushes[0].body["message"]["notification"] == {
        "title": "New secure message",
        "body": SECURE_BODY,
    }
    for word in ("Okafor", "biopsy", "malignant"):
        assert word not in mails[0].raw and word not in str(pushes[0].body)

    # Carol is online: by default she is not notified.
    carol = connected(notifying.ws("carol"))
    seen = send(notifying, "carol", PLAIN)
    notifying.wait_done("alice", seen)
    assert about(seen, smtp.mails(), push.received()) == ([], [])
    assert wait_for(lambda: carol.new_message_ids(), 10, "carol's frame") == [seen]
    carol.close()
    logs = notifying.logs()
    assert "bob@ward.test" not in logs and "Okafor" not in logs
