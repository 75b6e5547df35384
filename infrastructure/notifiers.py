"""Notification channels (push, email, SMS) behind the application's Notifier port.

Who hears of a message, and how, is each recipient's choice (their notification
preferences); by default only recipients who were offline when it was delivered.
An encrypted message's notification says only "You have a new secure message".
A provider that fails for a reason that may pass (connection, timeout, 5xx, 429)
fails the job, which the queue retries with backoff; what was already sent is
recorded per recipient and channel and is not sent again. A refusal for good (an
unknown push token, a rejected address) is that recipient's outcome, not a retry.
Addresses, phone numbers and tokens never reach a log line, an event or an error.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import httpx
from pydantic import SecretStr

from application.ports import ContactBook, Delivered, Notice, NotificationPreferences, Outcomes
from infrastructure.contacts import SqlSendLog
from infrastructure.settings import NotificationSettings, smtp_starttls

log = logging.getLogger("courier.notify")

SECURE_TITLE = "New secure message"
SECURE_BODY = "You have a new secure message"
PLAIN_TITLE = "New message"
PLAIN_BODY = "You have a new message"
SENT, REFUSED = "sent", "refused"
CONCURRENT_SENDS = 15  # delivered batches of one unit of work notified at once


class ProviderUnavailable(Exception):
    """A provider cannot take notifications right now: the job is retried with backoff."""

    safe_to_show = True  # our own wording: a channel and a status, never an address


class Refused(Exception):
    """The provider refused this one notification for good (bad address, unknown token)."""


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    data: dict[str, str]


def render(notice: Notice) -> Rendered:
    data = {
        "type": "message.new",
        "messageId": str(notice.message_id),
        "conversationId": str(notice.conversation_id),
    }
    if notice.encrypted:
        return Rendered(SECURE_TITLE, SECURE_BODY, data)
    if notice.preview is None:  # previews are off (NOTIFY_PREVIEW): neither text nor sender
        return Rendered(PLAIN_TITLE, PLAIN_BODY, data)
    return Rendered(f"New message from {notice.sender_id}", notice.preview, data)


Send = Callable[[str, Rendered], None]


class Channel(Protocol):
    name: str

    def address(self, preferences: NotificationPreferences) -> str | None: ...

    def session(self) -> Any:
        """A context manager yielding ``send(address, rendered)`` for one batch."""
        ...


def _check_http(response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    # Our credentials, a timeout, throttling or the provider's own trouble: try again
    # later (and show the operator). Anything else is about this one notification.
    if status in (401, 407, 408, 429) or status >= 500:
        raise ProviderUnavailable(f"HTTP {status}")
    raise Refused(f"HTTP {status}")


class _HttpChannel:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout

    def body(self, address: str, rendered: Rendered) -> dict[str, Any]:
        raise NotImplementedError

    @contextmanager
    def session(self) -> Iterator[Send]:
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:

            def send(address: str, rendered: Rendered) -> None:
                try:
                    response = client.post(self.url, json=self.body(address, rendered))
                except httpx.HTTPError as error:
                    raise ProviderUnavailable(type(error).__name__) from None
                _check_http(response)

            yield send


class PushChannel(_HttpChannel):
    """A webhook that takes FCM HTTP v1 ``messages:send`` bodies (FCM itself, or a relay)."""

    name = "push"

    def address(self, preferences: NotificationPreferences) -> str | None:
        return preferences.push_token

    def body(self, address: str, rendered: Rendered) -> dict[str, Any]:
        return {
            "message": {
                "token": address,
                "notification": {"title": rendered.title, "body": rendered.body},
                "data": rendered.data,
                "android": {"priority": "high"},
                "apns": {"headers": {"apns-priority": "10"}},
            }
        }


class SmsChannel(_HttpChannel):
    """A provider's HTTP API: ``POST {SMS_API_URL}/messages`` with ``{to, from, text}``."""

    name = "sms"

    def __init__(self, base_url: str, token: str | None, sender: str, timeout: float) -> None:
        super().__init__(base_url.rstrip("/") + "/messages", token, timeout)
        self.sender = sender

    def address(self, preferences: NotificationPreferences) -> str | None:
        return preferences.phone

    def body(self, address: str, rendered: Rendered) -> dict[str, Any]:
        return {"to": address, "from": self.sender, "text": f"{rendered.title}: {rendered.body}"}


class EmailChannel:
    """SMTP: ``smtp://`` (``?starttls=1`` to upgrade) or ``smtps://``; one connection a batch."""

    name = "email"

    def __init__(self, url: str, sender: str, timeout: float) -> None:
        self.url = urlparse(url)
        self.sender = sender
        self.timeout = timeout

    def address(self, preferences: NotificationPreferences) -> str | None:
        return preferences.email

    def _connect(self) -> smtplib.SMTP:
        url = self.url
        host = url.hostname or "localhost"
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if url.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, url.port or 465, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(host, url.port or 25, timeout=self.timeout)
            if smtp_starttls(url.geturl()):
                client.starttls(context=context)
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        return client

    def message(self, address: str, rendered: Rendered) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = address
        email["Subject"] = rendered.title
        email["Message-ID"] = make_msgid(domain="courier.invalid")
        email["X-Courier-Message-Id"] = rendered.data["messageId"]
        email.set_content(f"{rendered.body}\n\nOpen Courier to read it.\n")
        return email

    @contextmanager
    def session(self) -> Iterator[Send]:
        client: smtplib.SMTP | None = None

        def send(address: str, rendered: Rendered) -> None:
            nonlocal client
            if client is None:
                try:
                    client = self._connect()
                except (smtplib.SMTPException, OSError) as error:
                    # Unreachable, TLS or login trouble: ours to fix, never the recipient's.
                    raise ProviderUnavailable(type(error).__name__) from None
            try:
                client.send_message(self.message(address, rendered))
            except smtplib.SMTPRecipientsRefused as error:
                codes = [code for code, _ in error.recipients.values()]
                if all(500 <= code < 600 for code in codes):
                    raise Refused("recipient refused") from None
                raise ProviderUnavailable("recipient deferred") from None
            except smtplib.SMTPResponseException as error:
                if 500 <= error.smtp_code < 600 and error.smtp_code != 530:
                    raise Refused(f"SMTP {error.smtp_code}") from None
                raise ProviderUnavailable(f"SMTP {error.smtp_code}") from None
            except (smtplib.SMTPException, OSError) as error:
                raise ProviderUnavailable(type(error).__name__) from None

        try:
            yield send
        finally:
            if client is not None:
                with suppress(smtplib.SMTPException, OSError):
                    client.quit()


def channels_from(settings: NotificationSettings) -> dict[str, Channel]:
    """The channels this service has a provider for."""
    channels: dict[str, Channel] = {}
    timeout = settings.timeout_seconds
    if settings.push_webhook_url:
        channels["push"] = PushChannel(
            settings.push_webhook_url, _revealed(settings.push_webhook_token), timeout
        )
    if settings.smtp_url:
        url = settings.smtp_url.get_secret_value()
        channels["email"] = EmailChannel(url, settings.smtp_from, timeout)
    if settings.sms_api_url:
        channels["sms"] = SmsChannel(
            settings.sms_api_url, _revealed(settings.sms_api_key), settings.sms_from, timeout
        )
    return channels


def _revealed(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret else None


class ChannelNotifier:
    """Implements ``application.ports.Notifier`` over the configured channels."""

    def __init__(
        self, contacts: ContactBook, sends: SqlSendLog, channels: dict[str, Channel]
    ) -> None:
        self.contacts = contacts
        self.sends = sends
        self.channels = channels

    def notify(self, notice: Notice, offline: list[str], online: list[str]) -> Outcomes:
        people = [*offline, *online]
        preferences = self.contacts.many(notice.tenant_id, people)
        settled = self.sends.settled(str(notice.message_id), people)
        outcomes, work = self._plan(offline, online, preferences, settled)
        return self._deliver(notice, work, outcomes)

    def notify_many(self, batch: list[Delivered]) -> list[Outcomes | Exception]:
        """``notify`` for many delivered batches: preferences and what was already sent are
        read once for all of them, and the batches that have something to send send it
        concurrently. Each batch's outcomes, or the error it failed with."""
        people: dict[str, set[str]] = {}
        for notice, offline, online in batch:
            people.setdefault(notice.tenant_id, set()).update(offline, online)
        preferences = {t: self.contacts.many(t, sorted(users)) for t, users in people.items()}
        settled = self.sends.settled_many(list({str(n.message_id) for n, _, _ in batch}))
        plans = [
            self._plan(
                offline,
                online,
                preferences[notice.tenant_id],
                settled.get(str(notice.message_id), {}),
            )
            for notice, offline, online in batch
        ]
        results: list[Outcomes | Exception] = [outcomes for outcomes, _ in plans]
        sending = [i for i, (_, work) in enumerate(plans) if work]
        if not sending:
            return results

        def deliver(i: int) -> Outcomes | Exception:
            try:
                return self._deliver(batch[i][0], plans[i][1], plans[i][0])
            except Exception as error:
                return error

        with ThreadPoolExecutor(
            max_workers=min(len(sending), CONCURRENT_SENDS), thread_name_prefix="notify"
        ) as pool:
            for i, result in zip(sending, pool.map(deliver, sending), strict=True):
                results[i] = result
        return results

    def _plan(
        self,
        offline: list[str],
        online: list[str],
        preferences: dict[str, NotificationPreferences],
        settled: dict[tuple[str, str], str],
    ) -> tuple[Outcomes, dict[str, list[tuple[str, str]]]]:
        """Each recipient's outcome where nothing is to be sent, and what is to be sent."""
        outcomes: Outcomes = {}
        work: dict[str, list[tuple[str, str]]] = {}
        for user in [*offline, *online]:
            chosen = preferences.get(user)
            if user in online and not (chosen and chosen.when_online):
                outcomes[user] = {"none": "online"}
                continue
            if chosen is None or not chosen.channels:
                outcomes[user] = {"none": "no_channels"}
                continue
            outcomes[user] = {}
            for name in chosen.channels:
                channel = self.channels.get(name)
                address = channel.address(chosen) if channel is not None else None
                if (user, name) in settled:
                    outcomes[user][name] = settled[(user, name)]
                elif channel is None:
                    outcomes[user][name] = "not_configured"
                elif not address:
                    outcomes[user][name] = "no_address"
                else:
                    work.setdefault(name, []).append((user, address))
        return outcomes, work

    def _deliver(
        self, notice: Notice, work: dict[str, list[tuple[str, str]]], outcomes: Outcomes
    ) -> Outcomes:
        errors = self._send(notice, work, outcomes)
        if work:
            sent = sum(1 for result in outcomes.values() for o in result.values() if o == SENT)
            log.info("message %s: %d notification(s) sent", notice.message_id, sent)
        if errors:
            raise ProviderUnavailable("; ".join(errors))
        return outcomes

    def _send(
        self, notice: Notice, work: dict[str, list[tuple[str, str]]], outcomes: Outcomes
    ) -> list[str]:
        """Each channel on a thread of its own; what each recipient got goes in outcomes."""
        if not work:
            return []
        rendered = render(notice)
        with ThreadPoolExecutor(max_workers=len(work), thread_name_prefix="notify") as pool:
            futures = {
                name: pool.submit(self._run, name, items, str(notice.message_id), rendered)
                for name, items in work.items()
            }
        errors: list[str] = []
        for name, future in futures.items():
            done, error = future.result()
            for user, outcome in done.items():
                outcomes[user][name] = outcome
            if error is not None:
                errors.append(f"{name}: {error}")
        return errors

    def _run(
        self, name: str, items: list[tuple[str, str]], message_id: str, rendered: Rendered
    ) -> tuple[dict[str, str], str | None]:
        """Send to each recipient in turn; stop at the first sign the provider is down."""
        done: dict[str, str] = {}
        try:
            with self.channels[name].session() as send:
                for user, address in items:
                    try:
                        send(address, rendered)
                        outcome = SENT
                    except Refused:
                        outcome = REFUSED
                    self.sends.record(message_id, user, name, outcome)
                    done[user] = outcome
        except ProviderUnavailable as error:
            return done, str(error)
        return done, None


class FlagIndexer:
    """The `search` view indexes a message from its events; the job only marks it findable."""

    def index(self, message: Any) -> None:
        return None
