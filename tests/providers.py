"""Real local notification providers for tests: an SMTP server and an HTTP server.

``SmtpServer`` is aiosmtpd on a port of its own; ``HttpProvider`` is the standard
library's threading HTTP server, recording each JSON request (a push webhook in FCM
HTTP v1 shape, or an SMS API). Either can be told to fail its next requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.harness import free_port


@dataclass(frozen=True)
class Mail:
    recipients: list[str]
    message: Message

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode("utf-8")

    @property
    def raw(self) -> str:
        return self.message.as_string()


class _Mailbox:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.fail_next = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return "451 4.3.0 try again later"
            content = envelope.original_content or b""
            self.mails.append(Mail(list(envelope.rcpt_tos), message_from_bytes(content)))
        return "250 OK"


class SmtpServer:
    """aiosmtpd on 127.0.0.1; ``url`` is what SMTP_URL should be."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = _Mailbox()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def mails(self) -> list[Mail]:
        with self.mailbox.lock:
            return list(self.mailbox.mails)

    def fail(self, times: int) -> None:
        with self.mailbox.lock:
            self.mailbox.fail_next = times


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class HttpProvider:
    """Records JSON POSTs; answers 200, or ``status`` for the next ``times`` requests."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.requests: list[Request] = []
        self.failures: list[int] = []
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with provider.lock:
                    status = provider.failures.pop(0) if provider.failures else 200
                    if status == 200:
                        provider.requests.append(
                            Request(
                                self.path, {k.lower(): v for k, v in self.headers.items()}, body
                            )
                        )
                answer = json.dumps({"name": "projects/courier/messages/1"}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def received(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def fail(self, *statuses: int) -> None:
        with self.lock:
            self.failures.extend(statuses)


@contextmanager
def providers() -> Iterator[tuple[SmtpServer, HttpProvider, HttpProvider]]:
    """An SMTP server, a push webhook (FCM v1 path) and an SMS API, all running."""
    smtp = SmtpServer()
    push = HttpProvider("/v1/projects/courier/messages:send")
    sms = HttpProvider("/sms")
    smtp.controller.start()
    push.thread.start()
    sms.thread.start()
    try:
        yield smtp, push, sms
    finally:
        smtp.controller.stop()
        for provider in (push, sms):
            provider.server.shutdown()
            provider.server.server_close()


def provider_env(smtp: SmtpServer, push: HttpProvider, sms: HttpProvider) -> dict[str, str]:
    return {
        "SMTP_URL": smtp.url,
        "SMTP_ALLOW_PLAINTEXT": "1",  # aiosmtpd on loopback, without TLS
        "SMTP_FROM": "Courier <courier@test.invalid>",
        "PUSH_WEBHOOK_URL": push.url,
        "PUSH_WEBHOOK_TOKEN": "push-test-token",
        "SMS_API_URL": sms.url,
        "SMS_API_KEY": "sms-test-key",
    }
