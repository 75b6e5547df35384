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

from interfaces.console import ConsoleFiles
from interfaces.http import audit, conversations, keys, messages, ops, queues, users
from interfaces.http.endpoints import Endpoint, Services
from interfaces.http.errors import exception_handlers
from interfaces.http.middleware import RequestHeaders
from interfaces.http.openapi import document
from interfaces.ws import ws_endpoint

ENDPOINTS: tuple[Endpoint, ...] = (
    *conversations.ENDPOINTS,
    *queues.ENDPOINTS,
    *messages.ENDPOINTS,
    *keys.ENDPOINTS,
    *ops.ENDPOINTS,
    *audit.ENDPOINTS,
    *users.ENDPOINTS,
)


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/")


def create_app(
    container: Services,
    *,
    lifespan: Lifespan[Starlette] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The HTTP API over ``container``; ``extra_routes`` is where ``/metrics`` goes."""
    routes: list[BaseRoute] = [
        Route(
            e.path,
            e.handler,
            methods=[e.method],
            name=e.handler.__module__ + "." + e.handler.__name__,
        )
        for e in ENDPOINTS
    ]
    routes.append(WebSocketRoute("/ws", ws_endpoint))
    routes.append(Route("/", to_console, include_in_schema=False))
    routes.append(Mount("/console", app=ConsoleFiles(), name="console"))
    routes.extend(extra_routes)
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestHeaders)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.container = container
    app.state.openapi = document(ENDPOINTS)
    return app


# ---- logs never hold a token ------------------------------------------------------

_QUERY_TOKEN = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)
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
