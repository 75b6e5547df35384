"""The WebSocket read side (SPEC §5): live frames that follow the event log.

Each API process runs one ``Hub``: a follower of the event log (not of a broker), so
every process sees every delivery once, in log order, whichever process sent it.
A frame is sent after the event is stored; a worker that crashes and runs a job
again records nothing new, so no client sees the same delivery twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from application.errors import CourierError
from application.views import message_dict
from domain.events import Context
from domain.message import Message
from infrastructure.bootstrap import Container
from projections.runner import Follower, Positioned, read_position

log = logging.getLogger("courier.ws")

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_IDLE = 4000
CLOSE_TOO_MANY_FRAMES = 4429
STATUS_EVENTS = (
    Message.Encrypted,
    Message.Delivered,
    Message.Notified,
    Message.Indexed,
    Message.ProcessingFailed,
)


class Subscriber:
    """One connected socket: its identity, its bounded send queue, its subscriptions."""

    def __init__(self, websocket: WebSocket, ctx: Context, queue_size: int) -> None:
        self.websocket = websocket
        self.ctx = ctx
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self.conversations: set[str] = set()
        self.dropped = False
        self.closing: asyncio.Future[None] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.ctx.tenant_id, self.ctx.actor_id)

    def offer(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a client that cannot keep up is dropped, never waited for."""
        if self.dropped:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped = True
            log.warning("dropping a slow WebSocket client (send queue full)")
            self.closing = asyncio.ensure_future(self._close(CLOSE_TOO_SLOW, "send queue full"))

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code=code, reason=reason)


class Hub:
    """Routes frames from the log to the sockets of this process."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.users: dict[tuple[str, str], set[Subscriber]] = {}
        self.conversations: dict[str, set[Subscriber]] = {}
        self.follower = Follower(
            "ws-hub",
            container.event_log,
            self.on_events,
            container.event_log.last_position,
            batch_size=500,
            poll_interval=container.settings.poll_interval,
        )
        container.messaging.on_saved(self.follower.wake)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def register(self, sub: Subscriber) -> int:
        """Add a subscriber; frames after the returned position will reach it live."""
        with self.lock:
            self.users.setdefault(sub.key, set()).add(sub)
            return self.follower.position

    def unregister(self, sub: Subscriber) -> None:
        with self.lock:
            self.users.get(sub.key, set()).discard(sub)
            if not self.users.get(sub.key):
                self.users.pop(sub.key, None)
            for cid in sub.conversations:
                self.conversations.get(cid, set()).discard(sub)

    def subscribe(self, sub: Subscriber, conversation_id: str) -> None:
        with self.lock:
            sub.conversations.add(conversation_id)
            self.conversations.setdefault(conversation_id, set()).add(sub)

    def on_events(self, batch: Sequence[Positioned]) -> None:
        """Runs on the follower thread: work out frames, hand them to the event loop."""
        if self.loop is None:
            return
        for position, event in batch:
            if not isinstance(event, STATUS_EVENTS):
                continue
            tenant = event.meta.get("tenant_id", "")
            with self.lock:
                interested = bool(self.users) or bool(self.conversations)
            if not interested:
                continue
            try:
                message = self.container.messaging.get_message(tenant, event.originator_id)
            except CourierError:
                continue
            frames = self.frames_for(position, event, message)
            for sub, frame in frames:
                self.loop.call_soon_threadsafe(sub.offer, frame)

    def frames_for(
        self, position: int, event: Any, message: Message
    ) -> list[tuple[Subscriber, dict[str, Any]]]:
        tenant = message.tenant_id
        out: list[tuple[Subscriber, dict[str, Any]]] = []
        body = message_dict(message)
        with self.lock:
            if isinstance(event, Message.Delivered):
                for user in [*event.online, *event.offline]:
                    for sub in self.users.get((tenant, user), ()):
                        out.append((sub, new_frame(position, body)))
            status = {
                "type": "message.status",
                "messageId": body["id"],
                "conversationId": body["conversationId"],
                "status": body["status"],
                "deliveredCount": body["deliveredCount"],
                "recipientCount": body["recipientCount"],
                "notified": body["notified"],
                "indexed": body["indexed"],
                "event": type(event).__name__,
            }
            watchers = set(self.users.get((tenant, message.sender_id), ()))
            watchers |= {
                s
                for s in self.conversations.get(body["conversationId"], ())
                if s.ctx.tenant_id == tenant
            }
            out.extend((sub, status) for sub in watchers)
        return out


def new_frame(position: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message.new", "cursor": str(position), "message": message}


async def _refuse(websocket: WebSocket, message: str) -> None:
    body = {"error": {"code": "unauthorized", "message": message, "details": []}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
        return
    await websocket.accept()
    await websocket.close(code=CLOSE_UNAUTHORIZED, reason=message)


async def ws_endpoint(websocket: WebSocket) -> None:
    from interfaces.http.auth import AuthError, decode_token

    container: Container = websocket.app.state.container
    hub: Hub = websocket.app.state.hub
    settings = container.settings
    token = websocket.query_params.get("token", "")
    try:
        principal = decode_token(token, settings)
    except AuthError as error:
        await _refuse(websocket, str(error))
        return
    since_raw = websocket.query_params.get("since")
    since: int | None = None
    if since_raw is not None:
        if not since_raw.isdigit():
            await websocket.accept()
            await websocket.close(
                code=4400, reason="since must be a cursor from a message.new frame"
            )
            return
        since = int(since_raw)
    ctx = principal.context
    await websocket.accept()
    sub = Subscriber(websocket, ctx, settings.ws_send_queue)
    live_from = hub.register(sub)
    container.presence.connected(ctx.tenant_id, ctx.actor_id)
    sender: asyncio.Future[None] | None = None
    try:
        if since is not None:
            await _send_backlog(container, sub, since, live_from)
        await sub.websocket.send_text(json.dumps({"type": "ready", "cursor": str(live_from)}))
        sender = asyncio.ensure_future(_send_loop(sub))
        await _receive_loop(container, hub, sub)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unregister(sub)
        container.presence.disconnected(ctx.tenant_id, ctx.actor_id)
        if sender is not None:
            sender.cancel()
        with contextlib.suppress(Exception):
            if websocket.application_state != WebSocketState.DISCONNECTED:
                await websocket.close()


async def _send_loop(sub: Subscriber) -> None:
    while True:
        frame = await sub.queue.get()
        await sub.websocket.send_text(json.dumps(frame, separators=(",", ":")))


async def _send_backlog(container: Container, sub: Subscriber, since: int, until: int) -> None:
    """What was delivered to this user after ``since`` and before live frames began."""
    deadline = time.monotonic() + 5.0

    def projected() -> int:
        with container.engine.connect() as conn:
            return read_position(conn, "messages")

    while await asyncio.to_thread(projected) < until and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    ctx = sub.ctx
    position = since
    while position < until:
        rows = await asyncio.to_thread(
            container.queries.delivered_since, ctx.tenant_id, ctx.actor_id, position, 500
        )
        rows = [(p, m) for p, m in rows if p <= until]
        if not rows:
            break
        for pos, message in rows:
            await sub.websocket.send_text(
                json.dumps(new_frame(pos, message), separators=(",", ":"))
            )
        position = rows[-1][0]


async def _receive_loop(container: Container, hub: Hub, sub: Subscriber) -> None:
    settings = container.settings
    window_start, frames_in_window = time.monotonic(), 0
    while True:
        try:
            raw = await asyncio.wait_for(
                sub.websocket.receive_text(), timeout=settings.ws_idle_seconds
            )
        except TimeoutError:
            await sub.websocket.close(code=CLOSE_IDLE, reason="idle timeout")
            return
        now = time.monotonic()
        if now - window_start > 1.0:
            window_start, frames_in_window = now, 0
        frames_in_window += 1
        if frames_in_window > 50:
            await sub.websocket.close(
                code=CLOSE_TOO_MANY_FRAMES, reason="too many frames per second"
            )
            return
        await _handle_frame(container, hub, sub, raw)


async def _handle_frame(container: Container, hub: Hub, sub: Subscriber, raw: str) -> None:
    try:
        frame = json.loads(raw)
    except ValueError:
        frame = None
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "ping":
        sub.offer({"type": "pong"})
    elif kind == "subscribe" and isinstance(frame, dict):
        cid = frame.get("conversationId")
        try:
            conversation_id = UUID(str(cid))
            await asyncio.to_thread(container.messaging.get_conversation, sub.ctx, conversation_id)
        except (ValueError, CourierError):
            sub.offer(_frame_error("not_found", "conversation not found"))
            return
        hub.subscribe(sub, str(conversation_id))
        sub.offer({"type": "subscribed", "conversationId": str(conversation_id)})
    elif kind == "ack" and isinstance(frame, dict):
        sub.offer({"type": "acked", "messageId": str(frame.get("messageId", ""))[:64]})
    else:
        sub.offer(
            _frame_error("bad_frame", "expected a JSON object with type ping, subscribe or ack")
        )


def _frame_error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message, "details": []}}
