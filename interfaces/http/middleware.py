"""Per-request headers, whole-body and per-address limits, and the last line of
defence against unexpected errors."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from infrastructure.ratelimit import RateLimiter
from interfaces.http.auth import scope_request_id
from interfaces.http.errors import INTERNAL_MESSAGE, ApiError, error_response

log = logging.getLogger("courier.http")

# The API answers JSON only: nothing in it may run, be framed or be sniffed as HTML.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
CLOSE = {"Connection": "close"}
LIMITED_PATHS = ("/api", "/ws")


class RequestHeaders:
    """Echo ``X-Request-ID``, add security headers, answer 500 as JSON without a trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope_request_id(scope)
        no_store = scope["path"].startswith("/api")
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _with_headers(message.get("headers") or (), rid, no_store)
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


_SECURITY_RAW = tuple((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())
_REQUEST_ID = b"x-request-id"
_CACHE_CONTROL = b"cache-control"


def _with_headers(
    headers: Iterable[tuple[bytes, bytes]], rid: str, no_store: bool
) -> list[tuple[bytes, bytes]]:
    """An answer's raw headers with ours: the request id and (under ``/api``) no-store
    replace any the answer has, the security headers fill in what it does not set."""
    kept: list[tuple[bytes, bytes]] = []
    names = set()
    for name, value in headers:
        lower = name.lower()
        if lower == _REQUEST_ID or (no_store and lower == _CACHE_CONTROL):
            continue
        names.add(lower)
        kept.append((name, value))
    kept.append((_REQUEST_ID, rid.encode("latin-1")))
    kept.extend(h for h in _SECURITY_RAW if h[0] not in names)
    if no_store:
        kept.append((_CACHE_CONTROL, b"no-store"))
    return kept


def too_large(limit: int) -> ApiError:
    # Closing the connection spares reading the rest of a body nobody wants.
    message = f"the request body is larger than {limit} bytes"
    return ApiError(413, "content_too_large", message, headers=CLOSE)


def header_bytes(scope: Scope) -> int:
    """The size of the request line and headers, as they came."""
    size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return size + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


class RequestLimits:
    """Refuse headers over ``max_header_bytes`` (431) and any body over ``max_body_bytes``,
    declared or streamed (413), on every route and the WebSocket handshake."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:  # no route or id holds one: nothing is there
            await refuse(scope, receive, send, ApiError(404, "not_found", "not found", [], {}))
            return
        if header_bytes(scope) > self.max_header_bytes:
            message = f"the request line and headers are larger than {self.max_header_bytes} bytes"
            await refuse(
                scope, receive, send, ApiError(431, "headers_too_large", message, [], CLOSE)
            )
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await refuse(scope, receive, send, too_large(self.max_body_bytes))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            return message

        await self.app(scope, counted, send)


async def refuse(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    """Answer ``error`` before any route runs: an HTTP answer, or a refused handshake."""
    response = error_response(error.status, error.code, error.message, [], error.headers)
    if scope["type"] == "http":
        await response(scope, receive, send)
        return
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=4400 if error.status != 429 else 4429, reason=error.message)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def rate_limited(seconds: float) -> ApiError:
    wait = retry_after(seconds)
    message = f"too many requests; try again in {wait['Retry-After']} s"
    return ApiError(429, "rate_limited", message, headers=wait)


class AddressLimit:
    """``RATE_LIMIT_PER_ADDRESS``: requests to ``/api`` and WebSocket handshakes by address,
    counted before anything else is done for them (a token guesser is slowed down too)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if (
            scope["type"] not in ("http", "websocket")
            or not scope["path"].startswith(LIMITED_PATHS)
            or not client
        ):
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.address(str(client[0]))
        if not wait:
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, rate_limited(wait))
