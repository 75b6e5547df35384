"""Notification channels against a real local SMTP server and real local HTTP servers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from sqlalchemy import Engine, create_engine

from application.ports import Notice, NotificationPreferences
from infrastructure import migrate
from infrastructure.contacts import SqlContactBook, SqlSendLog
from infrastructure.notifiers import (
    SECURE_BODY,
    ChannelNotifier,
    ProviderUnavailable,
    channels_from,
)
from infrastructure.settings import notification_settings
from tests.providers import HttpProvider, SmtpServer, provider_env, providers

TENANT = "clinic-a"
SECRET_WORDS = "potassium 5.9 recheck at noon"
ALL = ("push", "email", "sms")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'read.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def local() -> Iterator[tuple[SmtpServer, HttpProvider, HttpProvider]]:
    with providers() as running:
        yield running


def notifier_for(engine: Engine, env: dict[str, str]) -> tuple[ChannelNotifier, SqlContactBook]:
    contacts = SqlContactBook(engine)
    channels = channels_from(notification_settings(env))
    return ChannelNotifier(contacts, SqlSendLog(engine), channels), contacts


def notice(encrypted: bool, message_id: UUID | None = None) -> Notice:
    return Notice(
        tenant_id=TENANT,
        message_id=message_id or uuid4(),
        conversation_id=uuid4(),
        sender_id="dr-lee",
        encrypted=encrypted,
        preview=None if encrypted else SECRET_WORDS,
    )


def everywhere(user: str, when_online: bool = False) -> NotificationPreferences:
    return NotificationPreferences(
        channels=ALL,
        email=f"{user}@ward.test",
        phone="+441234567890",
        push_token=f"token-{user}",
        when_online=when_online,
    )


def test_offline_recipient_hears_on_every_channel_and_secure_ones_say_nothing(
    engine: Engine,
    local: tuple[SmtpServer, HttpProvider, HttpProvider],
    caplog: pytest.LogCaptureFixture,
) -> None:
    smtp, push, sms = local
    notifier, contacts = notifier_for(engine, provider_env(smtp, push, sms))
    contacts.put(TENANT, "nurse", everywhere("nurse"))
    caplog.set_level(logging.DEBUG)

    plain = notice(encrypted=False)
    assert notifier.notify(plain, ["nurse"], []) == {
        "nurse": {"push": "sent", "email": "sent", "sms": "sent"}
    }
    secure = notice(encrypted=True)
    assert notifier.notify(secure, ["nurse"], []) == {
        "nurse": {"push": "sent", "email": "sent", "sms": "sent"}
    }

    mails = smtp.mails()
    assert [m.recipients for m in mails] == [["nurse@ward.test"], ["nurse@ward.test"]]
    assert SECRET_WORDS in mails[0].body
    assert mails[1].message["X-Courier-Message-Id"] == str(secure.message_id)
    assert SECURE_BODY in mails[1].body and "dr-lee" not in mails[1].raw

    pushes = push.received()
    assert pushes[0].headers["authorization"] == "Bearer push-test-token"
    first = pushes[0].body["message"]
    assert first["token"] == "token-nurse"
    assert first["notification"]["body"] == SECRET_WORDS
    assert first["data"] == {
        "type": "message.new",
        "messageId": str(plain.message_id),
        "conversationId": str(plain.conversation_id),
    }
    assert pushes[1].body["message"]["notification"] == {
        "title": "New secure message",
        "body": SECURE_BODY,
    }
    texts = sms.received()
    assert texts[0].path == "/sms/messages" and texts[0].body["to"] == "+441234567890"
    assert SECURE_BODY in texts[1].body["text"] and SECRET_WORDS not in texts[1].body["text"]

    # Everything this service logged (the test's own SMTP server logs its traffic).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "mail.log")
    for personal in ("nurse@ward.test", "+441234567890", "token-nurse", SECRET_WORDS):
        assert personal not in logged


def test_online_recipients_only_when_they_asked(
    engine: Engine, local: tuple[SmtpServer, HttpProvider, HttpProvider]
) -> None:
    smtp, push, sms = local
    notifier, contacts = notifier_for(engine, provider_env(smtp, push, sms))
    contacts.put(TENANT, "at-desk", everywhere("at-desk"))
    contacts.put(TENANT, "always", everywhere("always", when_online=True))

    outcomes = notifier.notify(notice(False), [], ["at-desk", "always"])

    assert outcomes["at-desk"] == {"none": "online"}
    assert outcomes["always"] == {"push": "sent", "email": "sent", "sms": "sent"}
    assert [m.recipients for m in smtp.mails()] == [["always@ward.test"]]


def test_what_cannot_be_sent_says_why(
    engine: Engine, local: tuple[SmtpServer, HttpProvider, HttpProvider]
) -> None:
    smtp, push, _sms = local
    env = {  # no SMS provider
        "SMTP_URL": smtp.url,
        "SMTP_ALLOW_PLAINTEXT": "1",
        "PUSH_WEBHOOK_URL": push.url,
    }
    notifier, contacts = notifier_for(engine, env)
    contacts.put(TENANT, "texter", NotificationPreferences(channels=("sms",), phone="+4412345678"))
    contacts.put(TENANT, "gone", NotificationPreferences(channels=("push",), push_token="stale"))
    push.fail(404)  # FCM: UNREGISTERED, for good

    outcomes = notifier.notify(notice(False), ["texter", "gone", "stranger"], [])

    assert outcomes == {
        "texter": {"sms": "not_configured"},
        "gone": {"push": "refused"},
        "stranger": {"none": "no_channels"},
    }


def test_provider_errors_fail_the_attempt_and_a_retry_sends_only_what_is_left(
    engine: Engine, local: tuple[SmtpServer, HttpProvider, HttpProvider]
) -> None:
    smtp, push, sms = local
    notifier, contacts = notifier_for(engine, provider_env(smtp, push, sms))
    for user in ("a", "b"):
        contacts.put(TENANT, user, everywhere(user))
    push.fail(503)
    smtp.fail(1)
    message_id = uuid4()

    with pytest.raises(ProviderUnavailable) as failed:
        notifier.notify(notice(False, message_id), ["a", "b"], [])
    reason = str(failed.value)
    assert "push: HTTP 503" in reason and "email: SMTP 451" in reason
    assert "@" not in reason and "token-" not in reason
    assert len(push.received()) == 0 and len(smtp.mails()) == 0
    assert len(sms.received()) == 2  # SMS was fine: it is not sent again

    outcomes = notifier.notify(notice(False, message_id), ["a", "b"], [])

    assert outcomes == {user: {"push": "sent", "email": "sent", "sms": "sent"} for user in "ab"}
    assert sorted(r.body["message"]["token"] for r in push.received()) == ["token-a", "token-b"]
    assert sorted(m.recipients[0] for m in smtp.mails()) == ["a@ward.test", "b@ward.test"]
    assert len(sms.received()) == 2


def test_an_unreachable_smtp_server_is_retried_later(engine: Engine) -> None:
    from tests.e2e.harness import free_port

    env = {"SMTP_URL": f"smtp://127.0.0.1:{free_port()}", "SMTP_ALLOW_PLAINTEXT": "1"}
    notifier, contacts = notifier_for(engine, env)
    contacts.put(TENANT, "a", NotificationPreferences(channels=("email",), email="a@ward.test"))

    with pytest.raises(ProviderUnavailable, match="email: ConnectionRefusedError"):
        notifier.notify(notice(True), ["a"], [])


def test_many_delivered_batches_at_once_each_get_their_own_outcome(
    engine: Engine, local: tuple[SmtpServer, HttpProvider, HttpProvider]
) -> None:
    smtp, push, sms = local
    notifier, contacts = notifier_for(engine, provider_env(smtp, push, sms))
    for user in ("a", "b", "c"):
        contacts.put(TENANT, user, NotificationPreferences(channels=("sms",), phone="+4412345"))
    sms.fail(503)  # the first send fails: exactly one of the batches is to be retried
    quiet, sending, loud = uuid4(), uuid4(), uuid4()

    results = notifier.notify_many(
        [
            (notice(False, quiet), [], ["a"]),  # online, asked for nothing then
            (notice(False, sending), ["b"], []),
            (notice(True, loud), ["c"], []),
        ]
    )

    assert results[0] == {"a": {"none": "online"}}
    failed = [r for r in results[1:] if isinstance(r, ProviderUnavailable)]
    sent = [r for r in results[1:] if isinstance(r, dict)]
    assert len(failed) == 1 and "sms: HTTP 503" in str(failed[0])
    assert len(sent) == 1 and next(iter(sent[0].values())) == {"sms": "sent"}
    assert len(sms.received()) == 1

    again = notifier.notify_many(
        [(notice(False, sending), ["b"], []), (notice(True, loud), ["c"], [])]
    )

    assert again == [{"b": {"sms": "sent"}}, {"c": {"sms": "sent"}}]
    assert len(sms.received()) == 2  # the batch that had been sent is not sent again
