"""The Starlette application: routes, error handlers, headers, log redaction."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.types import Lifespan

from infrastructure.ratelimit import RateLimiter
from interfaces.console import ConsoleFiles
from interfaces.http import audit, conversations, keys, messages, ops, queues, realtime, users
from interfaces.http.auth import authenticate, require_role
from interfaces.http.cors import Cors
from interfaces.http.endpoints import Endpoint, Handler, Services
from interfaces.http.errors import exception_handlers
from interfaces.http.middleware import AddressLimit, RequestHeaders, RequestLimits, rate_limited
from interfaces.http.openapi import document
from interfaces.http.routing import TableRouter
from interfaces.http.telemetry import HttpStats, HttpTelemetry, route_templates
from interfaces.http.ws import ws_endpoint

ENDPOINTS: tuple[Endpoint, ...] = (
    *conversations.ENDPOINTS,
    *queues.ENDPOINTS,
    *messages.ENDPOINTS,
    *keys.ENDPOINTS,
    *ops.ENDPOINTS,
    *audit.ENDPOINTS,
    *users.ENDPOINTS,
    *realtime.ENDPOINTS,
)


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/")


def guarded(endpoint: Endpoint, limiter: RateLimiter | None) -> Handler:
    """``endpoint``'s handler behind its checks: a token (401), the caller's rate limit
    (429), one of the endpoint's roles (403) — in that order, before anything is read."""
    if not endpoint.auth:
        return endpoint.handler

    async def handler(request: Request) -> Response:
        principal = authenticate(request)
        if limiter is not None:
            wait = await limiter.user(principal.tenant_id, principal.user_id)
            if wait:
                raise rate_limited(wait)
        require_role(principal, endpoint.roles)
        return await endpoint.handler(request)

    return handler


def create_app(
    container: Services,
    *,
    lifespan: Lifespan[Starlette] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    limiter: RateLimiter | None = None,
) -> Starlette:
    """The HTTP API over ``container``; ``extra_routes`` is where ``/metrics`` goes;
    ``limiter`` (built by the bootstrap) enforces ``RATE_LIMIT_*``, none without it."""
    routes: list[BaseRoute] = [
        Route(
            e.path,
            guarded(e, limiter),
            methods=[e.method],
            name=e.handler.__module__ + "." + e.handler.__name__,
        )
        for e in ENDPOINTS
    ]
    routes.append(WebSocketRoute("/ws", ws_endpoint))
    routes.append(Route("/", to_console, include_in_schema=False))
    routes.append(Mount("/console", app=ConsoleFiles(), name="console"))
    routes.extend(extra_routes)
    limits = container.settings.limits
    middleware = [Middleware(RequestHeaders)]
    if limits.cors_origins:
        middleware.insert(0, Middleware(Cors, origins=limits.cors_origins))
    stats = HttpStats()
    middleware.insert(0, Middleware(HttpTelemetry, stats=stats, templates=route_templates(routes)))
    if limiter is not None:
        middleware.append(Middleware(AddressLimit, limiter=limiter))
    middleware.append(
        Middleware(
            RequestLimits,
            max_body_bytes=limits.max_body_bytes,
            max_header_bytes=limits.max_header_bytes,
        )
    )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    # The same routes, found by a table where their path has no parameters.
    app.router = TableRouter(routes, lifespan)
    app.state.container = container
    app.state.http_stats = stats
    app.state.openapi = document(ENDPOINTS)
    return app


# ---- logs never hold a token ------------------------------------------------------

_QUERY_TOKEN = re.compile(r"((?:token|ticket)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _BEARER.sub(r"\1" + REDACTED, _QUERY_TOKEN.sub(r"\1" + REDACTED, text))


class RedactTokens(logging.Filter):
    """Rewrite ``token=…`` query values and ``Bearer …`` credentials in log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def install_log_redaction() -> None:
    """Attach ``RedactTokens`` to uvicorn's loggers and to every handler that prints them."""
    loggers = [
        logging.getLogger("uvicorn.access"),
        logging.getLogger("uvicorn.error"),
        logging.getLogger(),
    ]
    for logger in loggers:
        for target in [logger, *logger.handlers]:
            if not any(isinstance(f, RedactTokens) for f in target.filters):
                target.addFilter(RedactTokens())
