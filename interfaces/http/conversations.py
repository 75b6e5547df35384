"""Conversations: start one, change who is in it, page through its messages."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.access import AccessLog
from domain.access import PAGE
from domain.events import Context
from interfaces.http import responses
from interfaces.http.auth import authenticate
from interfaces.http.endpoints import Endpoint, Param, Services, respond, services
from interfaces.http.parsing import path_user_id, path_uuid, query_int, query_text, read_json
from interfaces.http.schemas import AddParticipants, CreateConversation
from interfaces.http.wire import conversation_dict

PAGE_DEFAULT, PAGE_MAX = 50, 200


async def create(request: Request) -> Response:
    ctx = authenticate(request).context
    body = await read_json(request, CreateConversation)

    def run() -> dict[str, Any]:
        app = services(request).messaging
        return conversation_dict(
            app.start_conversation(ctx, body.type, body.participant_ids, body.title)
        )

    return respond(await run_in_threadpool(run), 201)


async def add_participants(request: Request) -> Response:
    ctx = authenticate(request).context
    conversation_id = path_uuid(request, "conversation")
    body = await read_json(request, AddParticipants)

    def run() -> dict[str, Any]:
        app = services(request).messaging
        return conversation_dict(app.add_participants(ctx, conversation_id, body.user_ids))

    return respond(await run_in_threadpool(run))


async def remove_participant(request: Request) -> Response:
    ctx = authenticate(request).context
    conversation_id = path_uuid(request, "conversation")
    user_id = path_user_id(request)

    def run() -> dict[str, Any]:
        app = services(request).messaging
        return conversation_dict(app.remove_participant(ctx, conversation_id, user_id))

    return respond(await run_in_threadpool(run))


async def messages(request: Request) -> Response:
    ctx = authenticate(request).context
    conversation_id = path_uuid(request, "conversation")
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    before = query_text(request, "before", 512)
    page = await run_in_threadpool(_page, services(request), ctx, conversation_id, limit, before)
    return respond(page)


def _page(
    container: Services, ctx: Context, conversation_id: UUID, limit: int, before: str | None
) -> dict[str, Any]:
    # Membership first: a conversation the caller is not in does not exist for them.
    access = AccessLog(container.messaging)
    with access.on_conversation(ctx, PAGE, conversation_id):
        container.messaging.get_conversation(ctx, conversation_id)
    # Only what the caller sent or received: joining a group shows nothing sent before.
    items, cursor = container.queries.conversation_messages(
        ctx.tenant_id, ctx.actor_id, conversation_id, limit, before
    )
    access.viewed(ctx, PAGE, conversation_id, [str(item["id"]) for item in items])
    return {"items": items, "nextCursor": cursor}


ENDPOINTS = (
    Endpoint(
        "POST",
        "/api/conversations",
        create,
        "Start a conversation (the caller is added)",
        status=201,
        body=CreateConversation,
        response=responses.Conversation,
    ),
    Endpoint(
        "POST",
        "/api/conversations/{id}/participants",
        add_participants,
        "Add participants to a group conversation",
        body=AddParticipants,
        response=responses.Conversation,
    ),
    Endpoint(
        "DELETE",
        "/api/conversations/{id}/participants/{userId}",
        remove_participant,
        "Remove a participant from a group conversation",
        response=responses.Conversation,
    ),
    Endpoint(
        "GET",
        "/api/conversations/{id}/messages",
        messages,
        "A page of the conversation's messages, newest first",
        response=responses.MessagePage,
        query=(
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
            ),
            Param("before", {"type": "string", "description": "nextCursor of the previous page"}),
        ),
    ),
)
