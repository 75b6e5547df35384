"""WebSocket tickets: a short-lived, single-use pass for ``/ws?ticket=`` (docs/API.md §6).

A browser cannot set headers on a WebSocket handshake, so without a ticket its bearer
token would go in the URL, where proxies and servers log it. A ticket is good for one
handshake within ``WS_TICKET_SECONDS``, on any API process.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.tickets import TicketsUnavailable
from interfaces.http import responses
from interfaces.http.auth import authenticate, bearer_token, ticket_payload
from interfaces.http.endpoints import USER, Endpoint, answer, services
from interfaces.http.errors import ApiError


async def ticket(request: Request) -> Response:
    principal = authenticate(request, USER)
    container = services(request)
    ttl = container.settings.ws_ticket_seconds
    payload = ticket_payload(principal, bearer_token(request))
    try:
        value = await run_in_threadpool(container.tickets.issue, payload, ttl)
    except TicketsUnavailable:
        message = "tickets cannot be issued now; try again shortly"
        raise ApiError(503, "service_unavailable", message, headers={"Retry-After": "2"}) from None
    return answer(responses.WsTicket(ticket=value, expires_in=ttl), 201)


ENDPOINTS = (
    Endpoint(
        "POST",
        "/api/ws/ticket",
        ticket,
        "A single-use ticket to open the WebSocket with (/ws?ticket=), valid for seconds",
        status=201,
        response=responses.WsTicket,
    ),
)
