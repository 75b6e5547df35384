"""Messages: send (direct or to a group), read, view, fetch the envelope, search."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.access import AccessLog
from application.messaging import Messaging
from application.outgoing import SendResult
from domain.access import SEARCH
from domain.events import Context
from interfaces.http import responses
from interfaces.http.auth import authenticate
from interfaces.http.endpoints import ADMIN, Endpoint, Param, respond, services
from interfaces.http.errors import ApiError
from interfaces.http.parsing import (
    message_body_limit,
    path_uuid,
    query_int,
    query_text,
    query_uuid,
    read_json,
)
from interfaces.http.schemas import Send, SendDirect, SendGroup, Shred
from interfaces.http.wire import envelope_dict, message_dict, send_answer, shredded_dict

SEARCH_DEFAULT, SEARCH_MAX = 50, 200
S = TypeVar("S", bound=Send)


async def _read_send(request: Request, model: type[S]) -> S:
    limit = services(request).settings.max_content_bytes
    body = await read_json(request, model, message_body_limit(limit))
    if body.content_bytes() > limit:
        raise ApiError(413, "content_too_large", f"content is limited to {limit} bytes of UTF-8")
    return body


def _sent(result: SendResult) -> Response:
    # A repeat of an idempotent send answers what the first one did, but 200: nothing new.
    return respond(send_answer(result), 202 if result.created else 200)


async def send_direct(request: Request) -> Response:
    ctx = authenticate(request).context
    body = await _read_send(request, SendDirect)
    app = services(request).messaging
    outgoing = body.outgoing()
    if app.direct_needs_thread(ctx, body.recipient_id, outgoing):
        result = await run_in_threadpool(app.send_direct, ctx, body.recipient_id, outgoing)
    else:
        result = await app.send_direct_async(ctx, body.recipient_id, outgoing)
    return _sent(result)


async def send_group(request: Request) -> Response:
    ctx = authenticate(request).context
    body = await _read_send(request, SendGroup)
    app = services(request).messaging
    outgoing = body.outgoing()
    if app.group_needs_thread(outgoing):
        result = await run_in_threadpool(app.send_group, ctx, body.uuid(), outgoing)
    else:
        result = await app.send_group_async(ctx, body.uuid(), outgoing)
    return _sent(result)


async def _on_message(
    request: Request, action: str, call: Callable[[Messaging, Context, UUID], Any]
) -> Any:
    """Run a read of one message under the access log (a refusal is recorded too)."""
    ctx = authenticate(request).context
    message_id = path_uuid(request, "message")
    app = services(request).messaging
    return await run_in_threadpool(
        AccessLog(app).on_message, ctx, action, message_id, lambda: call(app, ctx, message_id)
    )


async def mark_read(request: Request) -> Response:
    message = await _on_message(request, "message.read", Messaging.mark_read)
    return respond(message_dict(message))


async def view(request: Request) -> Response:
    app = services(request).messaging
    if not app.reads_async:
        message = await _on_message(request, "message.view", Messaging.view_message)
        return respond(message_dict(message))
    ctx = authenticate(request).context
    message_id = path_uuid(request, "message")
    message = await AccessLog(app).on_message_async(
        ctx, "message.view", message_id, lambda: app.view_message_async(ctx, message_id)
    )
    return respond(message_dict(message))


async def envelope(request: Request) -> Response:
    sealed = await _on_message(request, "message.envelope", Messaging.envelope)
    return respond(envelope_dict(sealed))


async def shred(request: Request) -> Response:
    ctx = authenticate(request).context
    message_id = path_uuid(request, "message")
    body = await read_json(request, Shred)
    app = services(request).messaging
    report = await run_in_threadpool(app.shred, ctx, message_id, body.reason)
    return respond(shredded_dict(report))


async def cancel(request: Request) -> Response:
    ctx = authenticate(request).context
    message_id = path_uuid(request, "message")
    app = services(request).messaging
    message = await run_in_threadpool(app.cancel, ctx, message_id, datetime.now(UTC))
    return respond(message_dict(message))


async def search(request: Request) -> Response:
    ctx = authenticate(request).context
    query = query_text(request, "q", 200, required=True)
    assert query is not None
    conversation_id = query_uuid(request, "conversationId")
    limit = query_int(request, "limit", SEARCH_DEFAULT, 1, SEARCH_MAX)
    container = services(request)

    def run() -> list[dict[str, Any]]:
        found = container.queries.search(ctx.tenant_id, ctx.actor_id, query, conversation_id, limit)
        ids = [str(item["id"]) for item in found]
        AccessLog(container.messaging).viewed(ctx, SEARCH, conversation_id, ids)
        return found

    return respond({"items": await run_in_threadpool(run)})


ENDPOINTS = (
    Endpoint(
        "POST",
        "/api/messages/direct",
        send_direct,
        "Send a direct message (a repeated clientMessageId answers the first send, 200)",
        status=202,
        body=SendDirect,
        response=responses.SendAnswer,
        also=(200,),
    ),
    Endpoint(
        "POST",
        "/api/messages/group",
        send_group,
        "Send a message to a group conversation",
        status=202,
        body=SendGroup,
        response=responses.SendAnswer,
        also=(200,),
    ),
    Endpoint(
        "POST",
        "/api/messages/{id}/read",
        mark_read,
        "Mark a message read (recipients)",
        response=responses.Message,
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}",
        view,
        "A message (records that the caller viewed it)",
        response=responses.Message,
    ),
    Endpoint(
        "DELETE",
        "/api/messages/{id}",
        cancel,
        "Cancel a scheduled message (its sender, before it is due)",
        response=responses.Message,
    ),
    Endpoint(
        "GET",
        "/api/messages/{id}/envelope",
        envelope,
        "The encrypted envelope of a message, with the data key wrapped for the caller",
        response=responses.Envelope,
    ),
    Endpoint(
        "POST",
        "/api/messages/{id}/shred",
        shred,
        "Destroy a message's content keys (role admin): its envelope then answers 410",
        body=Shred,
        roles=ADMIN,
        response=responses.Shredded,
    ),
    Endpoint(
        "GET",
        "/api/search",
        search,
        "Search the plain-text messages the caller may see",
        response=responses.SearchAnswer,
        query=(
            Param("q", {"type": "string", "minLength": 1, "maxLength": 200}, required=True),
            Param("conversationId", {"type": "string", "format": "uuid"}),
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": SEARCH_MAX, "default": SEARCH_DEFAULT},
            ),
        ),
    ),
)
