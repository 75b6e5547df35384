"""Per-request headers, and the last line of defence against unexpected errors."""

from __future__ import annotations

import logging

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interfaces.http.auth import request_id
from interfaces.http.errors import INTERNAL_MESSAGE, error_response

log = logging.getLogger("courier.http")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class RequestHeaders:
    """Echo ``X-Request-ID``, add security headers, answer 500 as JSON without a trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(HTTPConnection(scope))
        no_store = scope["path"].startswith("/api")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if no_store:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            log.exception(
                "unhandled error on %s %s (request %s)", scope["method"], scope["path"], rid
            )
            response = error_response(500, "internal_error", INTERNAL_MESSAGE)
            await response(scope, receive, send_with_headers)
