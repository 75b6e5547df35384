"""The audit trail for auditors (role ``auditor`` only; docs/API.md §4.6).

Every answer is about the auditor's own tenant, holds no message content, and is
itself recorded as an ``AuditQueried`` event before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.access import AccessLog
from application.retention import LegalHolds
from domain.events import Context
from interfaces.http import responses
from interfaces.http.auth import authenticate
from interfaces.http.endpoints import AUDITOR, Endpoint, Param, respond, services
from interfaces.http.errors import invalid, not_found
from interfaces.http.parsing import (
    path_user_id,
    path_uuid,
    query_int,
    query_text,
    query_uuid,
    read_json,
)
from interfaces.http.schemas import LegalHold
from interfaces.http.wire import conversation_dict
from projections.audit_queries import EventFilter, Page

PAGE_DEFAULT, PAGE_MAX = 100, 1000


def _time(request: Request, name: str) -> datetime | None:
    raw = query_text(request, name, 64)
    if raw is None and request.query_params.get(name) != "":
        return None
    raw = raw or ""
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(name, "must be an ISO 8601 date or time, e.g. 2024-12-01T00:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _paging(request: Request) -> tuple[str | None, int]:
    return query_text(request, "cursor", 128), query_int(
        request, "limit", PAGE_DEFAULT, 1, PAGE_MAX
    )


async def _answer(
    request: Request,
    ctx: Context,
    query: str,
    params: dict[str, str],
    run: Callable[[], tuple[dict[str, Any], int]],
) -> Response:
    """Compute the answer, record the auditor's query (with its size), then reply."""
    app = services(request).messaging

    def recorded() -> dict[str, Any]:
        answer, results = run()
        AccessLog(app).audit_queried(ctx, query, params, results)
        return answer

    return respond(await run_in_threadpool(recorded))


def _listing(page: Page) -> tuple[dict[str, Any], int]:
    items, cursor = page
    return {"items": items, "nextCursor": cursor}, len(items)


async def events(request: Request) -> Response:
    ctx = authenticate(request).context
    aggregate = query_uuid(request, "aggregateId")
    where = EventFilter(
        aggregate_id=str(aggregate) if aggregate else None,
        actor_id=query_text(request, "actorId", 128),
        type=query_text(request, "type", 64),
        start=_time(request, "from"),
        end=_time(request, "to"),
    )
    cursor, limit = _paging(request)
    audit = services(request).audit
    return await _answer(
        request,
        ctx,
        "events",
        where.params(),
        lambda: _listing(audit.events(ctx.tenant_id, where, cursor, limit)),
    )


async def trail(request: Request) -> Response:
    ctx = authenticate(request).context
    message_id = str(path_uuid(request, "message"))
    cursor, limit = _paging(request)
    audit = services(request).audit

    def run() -> tuple[dict[str, Any], int]:
        page = audit.trail(ctx.tenant_id, message_id, cursor, limit)
        if page is None:
            raise not_found("message")
        answer, results = _listing(page)
        return {"messageId": message_id, **answer}, results

    return await _answer(request, ctx, "message.trail", {"messageId": message_id}, run)


async def access(request: Request) -> Response:
    ctx = authenticate(request).context
    user_id = path_user_id(request)
    cursor, limit = _paging(request)
    audit = services(request).audit

    def run() -> tuple[dict[str, Any], int]:
        answer, results = _listing(audit.access(ctx.tenant_id, user_id, cursor, limit))
        return {"userId": user_id, **answer}, results

    return await _answer(request, ctx, "user.access", {"userId": user_id}, run)


async def verify(request: Request) -> Response:
    ctx = authenticate(request).context
    chain = services(request).chain

    def run() -> tuple[dict[str, Any], int]:
        verdict = chain.check()
        return verdict.as_dict(), int(verdict.checked)

    return await _answer(request, ctx, "verify", {}, run)


async def holds(request: Request) -> Response:
    ctx = authenticate(request).context
    audit = services(request).audit

    def run() -> tuple[dict[str, Any], int]:
        items = audit.holds(ctx.tenant_id)
        return {"items": items}, len(items)

    return await _answer(request, ctx, "holds", {}, run)


async def place_hold(request: Request) -> Response:
    return await _hold(request, place=True)


async def release_hold(request: Request) -> Response:
    return await _hold(request, place=False)


async def _hold(request: Request, *, place: bool) -> Response:
    ctx = authenticate(request).context
    conversation_id: UUID = path_uuid(request, "conversation")
    body = await read_json(request, LegalHold)
    holds = LegalHolds(services(request).messaging)
    change = holds.place if place else holds.release

    def run() -> dict[str, Any]:
        conversation = change(ctx, conversation_id, body.reason)
        return {**conversation_dict(conversation), "legalHold": conversation.legal_hold}

    return respond(await run_in_threadpool(run))


_PAGING = (
    Param("cursor", {"type": "string", "description": "nextCursor of the previous page"}),
    Param("limit", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT}),
)

ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/audit/events",
        events,
        "Event log entries of the auditor's tenant, oldest first (never content)",
        roles=AUDITOR,
        response=responses.AuditPage,
        query=(
            Param("aggregateId", {"type": "string", "format": "uuid"}),
            Param("actorId", {"type": "string", "maxLength": 128}),
            Param("type", {"type": "string", "maxLength": 64}),
            Param("from", {"type": "string", "format": "date-time"}),
            Param("to", {"type": "string", "format": "date-time"}),
            *_PAGING,
        ),
    ),
    Endpoint(
        "GET",
        "/api/audit/messages/{id}/trail",
        trail,
        "A message's whole trail: its lifecycle, every view, read and refused attempt",
        query=_PAGING,
        roles=AUDITOR,
        response=responses.AuditTrail,
    ),
    Endpoint(
        "GET",
        "/api/audit/users/{userId}/access",
        access,
        "Accounting of access: who viewed, read or tried to reach this user's messages",
        query=_PAGING,
        roles=AUDITOR,
        response=responses.AccessAccounting,
    ),
    Endpoint(
        "GET",
        "/api/audit/verify",
        verify,
        "Check the hash chain and the audit tables against the event log and the latest "
        "signed checkpoint; name the first bad position",
        roles=AUDITOR,
        response=responses.ChainVerdict,
    ),
    Endpoint(
        "GET",
        "/api/audit/holds",
        holds,
        "Conversations on legal hold",
        roles=AUDITOR,
        response=responses.LegalHolds,
    ),
    Endpoint(
        "PUT",
        "/api/audit/conversations/{id}/hold",
        place_hold,
        "Put a conversation on legal hold: retention leaves its messages alone",
        body=LegalHold,
        roles=AUDITOR,
        response=responses.HeldConversation,
    ),
    Endpoint(
        "DELETE",
        "/api/audit/conversations/{id}/hold",
        release_hold,
        "Release a conversation's legal hold",
        body=LegalHold,
        roles=AUDITOR,
        response=responses.HeldConversation,
    ),
)
