"""Every error as ``{"error": {"code", "message", "details"}}`` (docs/API.md §2).

Client mistakes answer 4xx with a precise code; anything unexpected answers a
generic 500 and is logged here with its traceback, which never reaches the client.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
import sqlalchemy.exc
from eventsourcing import persistence
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from application.errors import (
    Conflict,
    CourierError,
    Forbidden,
    Gone,
    Invalid,
    MissingKeys,
    NotFound,
)
from infrastructure.storegate import LockTimeout
from interfaces.http.auth import AuthError, RoleRequired

log = logging.getLogger("courier.http")

Details = list[dict[str, str]]

COURIER_STATUS: tuple[tuple[type[CourierError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (Conflict, 409),
    (Invalid, 422),
    (MissingKeys, 422),
    (Gone, 410),
)
CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "content_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}
OUTAGES: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    psycopg.OperationalError,
    persistence.OperationalError,
    persistence.InterfaceError,
)
# A value the store refused (out of range, not storable): the request's fault, not an outage.
DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlalchemy.exc.DataError,
    psycopg.DataError,
    persistence.DataError,
)
INTERNAL_MESSAGE = "something went wrong on our side; the error has been logged"


class ApiError(Exception):
    """An error the HTTP layer itself finds (bad JSON, wrong type, too large)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Details | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = dict(headers or {})


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def invalid(field: str, issue: str) -> ApiError:
    return ApiError(
        422, "validation_error", f"{field}: {issue}", [{"field": field, "issue": issue}]
    )


def validation_details(error: ValidationError) -> Details:
    """``[{field, issue}]`` from pydantic, by alias and without the offending values."""
    return [{"field": _field(e), "issue": _issue(e)} for e in error.errors(include_input=False)]


def _field(error: ErrorDetails) -> str:
    if error["loc"]:
        return ".".join(str(part)[:64] for part in error["loc"])
    field = (error.get("ctx") or {}).get("field")
    return str(field) if field else "body"


def _issue(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "is required"
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    return error["msg"].removeprefix("Value error, ")


# ---- handlers -----------------------------------------------------------------


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def on_auth_error(request: Request, exc: Exception) -> Response:
    return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})


async def on_role_required(request: Request, exc: Exception) -> Response:
    return error_response(403, "forbidden", str(exc))


async def on_courier_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CourierError)
    status = next((s for cls, s in COURIER_STATUS if isinstance(exc, cls)), 400)
    return error_response(status, exc.code, exc.message, exc.details)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    details = validation_details(exc)
    return error_response(422, "validation_error", "the request is not valid", details)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = CODES_BY_STATUS.get(status) or _snake(status)
    message = exc.detail or http.HTTPStatus(status).phrase
    return error_response(status, code, message, headers=exc.headers)


async def on_client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read this answer; it only has to end the request quietly.
    return error_response(400, "client_disconnected", "the client went away mid-request")


def outage_cause(exc: Exception) -> str:
    """Which store an outage error comes from (``courier_http_unavailable``'s cause)."""
    if isinstance(exc, LockTimeout):
        return "lock_timeout"
    if isinstance(exc, persistence.OperationalError | persistence.InterfaceError):
        return "event_store"
    return "read_store"


async def on_outage(request: Request, exc: Exception) -> Response:
    stats = getattr(request.app.state, "http_stats", None)
    if stats is not None:
        stats.refused(outage_cause(exc))
    log.warning("a store is unreachable: %s: %s", type(exc).__name__, exc)
    message = "a backing service is unavailable; try again shortly"
    return error_response(503, "service_unavailable", message, headers={"Retry-After": "2"})


async def on_data_error(request: Request, exc: Exception) -> Response:
    log.warning("the store refused a value on %s: %s", request.url.path, type(exc).__name__)
    message = "the request holds a value that cannot be stored"
    return error_response(422, "unstorable_value", message)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", INTERNAL_MESSAGE)


def _snake(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        return "error"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def exception_handlers() -> dict[Any, ExceptionHandler]:
    handlers: dict[Any, ExceptionHandler] = {
        ApiError: on_api_error,
        AuthError: on_auth_error,
        RoleRequired: on_role_required,
        CourierError: on_courier_error,
        ValidationError: on_validation_error,
        HTTPException: on_http_exception,
        ClientDisconnect: on_client_gone,
        Exception: on_unexpected,
    }
    handlers.update(dict.fromkeys(OUTAGES, on_outage))
    handlers.update(dict.fromkeys(DATA_ERRORS, on_data_error))
    return handlers
