"""The WebSocket endpoint (docs/API.md §6; the protocol is written down in docs/REALTIME.md).

``GET /ws?ticket=<ticket>[&since=<cursor>]`` (a ticket from ``POST /api/ws/ticket``) or
``GET /ws?token=<JWT>[&since=<cursor>]``: authenticated at the handshake (role ``user``,
a browser page's ``Origin`` checked against ``WS_ALLOWED_ORIGINS``); with
``since``, what was delivered to the user after that cursor comes first, as
``message.new`` frames in log order, then ``ready``, then live frames from the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from uuid import UUID

import jwt
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from application.access import AccessLog
from application.errors import CourierError
from domain.access import BACKLOG
from infrastructure.runtime.container import Container
from infrastructure.settings import Settings
from infrastructure.storage.positions import read_position
from infrastructure.tickets import TicketsUnavailable
from interfaces.http.hub import Hub, Subscriber, dumps, frame_writer, new_frame

if TYPE_CHECKING:
    from interfaces.http.auth import Principal

__all__ = ["Hub", "ws_endpoint"]

log = logging.getLogger("courier.ws")

CLOSE_IDLE = 4000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403  # no role user, or an origin not allowed
CLOSE_TOO_SLOW = 4408
CLOSE_TOO_MANY = 4429
CLOSE_TRY_AGAIN = 1013  # the read model is too far behind to serve ``since`` now
MAX_CURSOR_DIGITS = 18  # a log position fits a signed 64-bit integer
BACKLOG_PAGE = 500
BACKLOG_WAIT_SECONDS = 5.0
# A refused handshake: the error code of its HTTP answer and, where the server cannot
# answer the handshake with HTTP, the close code it is given instead.
REFUSALS = {
    401: ("unauthorized", CLOSE_UNAUTHORIZED),
    403: ("forbidden", CLOSE_FORBIDDEN),
    503: ("service_unavailable", CLOSE_TRY_AGAIN),
}


class Closing(Exception):
    """End the session with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def _refuse(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the handshake with an HTTP error, or (where the server cannot) accept and
    close at once with the matching close code."""
    code = REFUSALS[status]
    body = {"error": {"code": code[0], "message": message, "details": []}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"Retry-After": "2"} if status == 503 else None
        await websocket.send_denial_response(JSONResponse(body, status, headers))
        return
    await websocket.accept()
    await websocket.close(code=code[1], reason=message)


def origin_allowed(origin: str | None, host: str, settings: Settings) -> bool:
    """Whether a page of ``origin`` may open the socket (docs/REALTIME.md, "Connecting").

    No ``Origin`` header: not a browser, which the token or ticket alone admits. With
    ``WS_ALLOWED_ORIGINS`` set, only those origins (``*``: any); unset, the page's own
    origin (its host is the one the handshake was sent to) and those of ``CORS_ORIGINS``.
    """
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    allowed = settings.ws_allowed_origins
    if allowed:
        return "*" in allowed or origin in {o.lower() for o in allowed}
    if origin in {o.lower() for o in settings.limits.cors_origins}:
        return True
    return bool(host) and urlparse(origin).netloc == host.strip().lower()


async def _caller(websocket: WebSocket, container: Container) -> tuple[Principal, float] | None:
    """Who opens the socket (by ``ticket`` or ``token``) and when their token expires
    (monotonic); None once the handshake has been refused."""
    from interfaces.http.auth import AuthError, decode_token, request_id, ticket_principal

    settings = container.settings
    seen = {
        "correlation_id": request_id(websocket),
        "source_ip": websocket.client.host if websocket.client else "",
        "user_agent": websocket.headers.get("user-agent", ""),
    }
    ticket = websocket.query_params.get("ticket")
    if ticket is not None:
        try:
            payload = await asyncio.to_thread(container.tickets.redeem, ticket)
        except TicketsUnavailable:
            await _refuse(websocket, 503, "tickets cannot be checked now; try again shortly")
            return None
        if payload is None:
            await _refuse(websocket, 401, "the ticket is unknown, used or expired")
            return None
        principal, exp = ticket_principal(payload, **seen)
        if exp + settings.limits.jwt_leeway <= time.time():
            await _refuse(websocket, 401, "the token has expired")
            return None
    else:
        token = websocket.query_params.get("token", "")
        try:
            principal = decode_token(token, settings, **seen)
        except AuthError as error:
            await _refuse(websocket, 401, str(error))
            return None
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
    if "user" not in principal.roles:
        await _refuse(websocket, 403, "the WebSocket needs the role user")
        return None
    return principal, time.monotonic() + max(0.0, float(exp) - time.time())


async def ws_endpoint(websocket: WebSocket) -> None:
    container: Container = websocket.app.state.container
    hub: Hub = websocket.app.state.hub
    settings = container.settings
    if not origin_allowed(
        websocket.headers.get("origin"), websocket.headers.get("host", ""), settings
    ):
        await _refuse(websocket, 403, "pages of this origin may not open the WebSocket")
        return
    caller = await _caller(websocket, container)
    if caller is None:
        return
    principal, expires_at = caller
    ctx = principal.context
    since_raw = websocket.query_params.get("since")
    await websocket.accept()
    if since_raw is not None and not _is_cursor(since_raw):
        await websocket.close(CLOSE_BAD_REQUEST, "since must be a cursor from this server")
        return
    if hub.connections_of(ctx) >= settings.ws_max_per_user:
        await websocket.close(CLOSE_TOO_MANY, "too many connections for this user")
        return
    sub = Subscriber(websocket, ctx, settings.ws_send_queue, frame_writer(websocket))
    live_from = hub.register(sub)
    await _presence(container.presence.connected, sub)
    closing: Closing | None = None
    try:
        if since_raw is not None:
            await _send_backlog(container, sub, int(since_raw), live_from)
        await websocket.send_text(dumps({"type": "ready", "cursor": str(live_from)}))
        closing = await _serve(container, hub, sub, expires_at)
    except Closing as error:
        closing = error
    except WebSocketDisconnect:
        pass
    finally:
        hub.unregister(sub)
        await _presence(container.presence.disconnected, sub)
    if websocket.application_state != WebSocketState.DISCONNECTED:
        code, reason = (closing.code, closing.reason) if closing else (1000, "")
        with contextlib.suppress(Exception):
            await websocket.close(code=code, reason=reason)


async def _presence(call: Callable[[str, str], None], sub: Subscriber) -> None:
    """Tell presence (Redis) about the socket; best effort, so that sockets work without it.

    While Redis is down the socket still gets every frame (the hub follows the event
    log); the API process writes its presence again every 20 s once Redis is back.
    """
    try:
        await asyncio.to_thread(call, sub.ctx.tenant_id, sub.ctx.actor_id)
    except Exception as error:
        log.warning("presence is unavailable (%s); the socket goes on", type(error).__name__)


def _is_cursor(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_CURSOR_DIGITS


async def _serve(container: Container, hub: Hub, sub: Subscriber, expires_at: float) -> Closing:
    """Send and receive until one side ends the session; why it ended."""
    sender = asyncio.ensure_future(sub.send_queued())
    receiver = asyncio.ensure_future(_receive_loop(container, hub, sub, expires_at))
    too_slow = asyncio.ensure_future(sub.too_slow.wait())
    tasks = {sender, receiver, too_slow}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if too_slow in done:
        return Closing(CLOSE_TOO_SLOW, "send queue full: the client reads too slowly")
    finished = receiver if receiver in done else sender
    error = finished.exception()
    if isinstance(error, Closing):
        return error
    if error is not None:
        raise error
    return Closing(1000, "")


async def _send_backlog(container: Container, sub: Subscriber, since: int, until: int) -> None:
    """What was delivered to this user after ``since`` up to ``until``, in log order."""

    def projected() -> int:
        with container.engine.connect() as conn:
            return read_position(conn, "messages")

    deadline = time.monotonic() + BACKLOG_WAIT_SECONDS
    while await asyncio.to_thread(projected) < until:
        if time.monotonic() > deadline:
            raise Closing(CLOSE_TRY_AGAIN, "the read model is catching up; reconnect shortly")
        await asyncio.sleep(0.02)
    ctx = sub.ctx
    position = since
    while position < until:
        rows = await asyncio.to_thread(
            container.queries.delivered_since, ctx.tenant_id, ctx.actor_id, position, BACKLOG_PAGE
        )
        rows = [(p, m) for p, m in rows if p <= until]
        if not rows:
            break
        # Recorded before it is sent, as every read (application/access.py): one
        # ``Access.Viewed`` per page of the backlog.
        ids = [str(message["id"]) for _, message in rows]
        await asyncio.to_thread(AccessLog(container.messaging).viewed, ctx, BACKLOG, None, ids)
        for pos, message in rows:
            await sub.websocket.send_text(dumps(new_frame(pos, message)))
        position = rows[-1][0]


async def _receive_loop(container: Container, hub: Hub, sub: Subscriber, expires_at: float) -> None:
    idle = container.settings.ws_idle_seconds
    per_second = container.settings.limits.ws_frames_per_second
    window_start, frames_in_window = time.monotonic(), 0
    while True:
        left = expires_at - time.monotonic()
        try:
            message = await asyncio.wait_for(sub.websocket.receive(), timeout=min(idle, left))
        except TimeoutError:
            # Which deadline was waited for decides (a timer may fire a hair early).
            if left <= idle:
                raise Closing(CLOSE_UNAUTHORIZED, "the token has expired") from None
            raise Closing(CLOSE_IDLE, "idle timeout") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        now = time.monotonic()
        if now - window_start > 1.0:
            window_start, frames_in_window = now, 0
        frames_in_window += 1
        if frames_in_window > per_second:
            raise Closing(CLOSE_TOO_MANY, "too many frames per second")
        # A binary frame is no frame of this protocol; it is answered like any bad one.
        await _handle_frame(container, hub, sub, message.get("text") or "")


async def _handle_frame(container: Container, hub: Hub, sub: Subscriber, raw: str) -> None:
    try:
        frame: Any = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json can go
        frame = None
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "ping":
        sub.offer(dumps({"type": "pong"}))
    elif kind == "subscribe":
        try:
            conversation_id = UUID(str(frame.get("conversationId")))
            await asyncio.to_thread(container.messaging.get_conversation, sub.ctx, conversation_id)
        except (ValueError, CourierError):
            sub.offer(_error("not_found", "conversation not found"))
            return
        hub.subscribe(sub, str(conversation_id))
        sub.offer(dumps({"type": "subscribed", "conversationId": str(conversation_id)}))
    elif kind == "ack":
        try:
            message_id = UUID(str(frame.get("messageId")))
        except ValueError:
            sub.offer(_error("bad_frame", "ack needs the messageId of a message.new frame"))
            return
        sub.offer(dumps({"type": "acked", "messageId": str(message_id)}))
    else:
        sub.offer(_error("bad_frame", "expected a JSON object with type ping, subscribe or ack"))


def _error(code: str, message: str) -> str:
    return dumps({"type": "error", "error": {"code": code, "message": message, "details": []}})
