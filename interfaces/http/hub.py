"""The WebSocket hub: one per API process, following the event log (docs/API.md §6).

The hub follows the event log itself rather than a broker or Redis pub/sub: every
API process sees every delivery exactly once, in log order, whichever process (or
worker) stored it, and a restart loses nothing that a cursor cannot recover. A
frame is made after its event is stored; a job that runs twice stores nothing new,
so no client sees one delivery twice.

Frames are serialised once per event, down to their bytes on the wire, and shared by
every socket they go to. Where the server lets the hub write a frame straight to a
socket's transport (see ``FRAMES_EXTENSION``), a socket that is keeping up gets it
at once, in the same turn of the event loop as every other recipient; otherwise, and
whenever a socket is behind, the frame waits in that socket's bounded queue, so a slow
client is dropped instead of slowing anyone else down.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from starlette.websockets import WebSocket
from websockets.frames import Frame, Opcode

from application.errors import CourierError
from domain.events import Context
from domain.message import Message
from infrastructure.follower import LogFollower
from infrastructure.runtime.container import Container
from infrastructure.storage.eventlog import Positioned
from interfaces.http.wire import message_dict

log = logging.getLogger("courier.ws")

RECENT_MESSAGES = 1024
# A socket is too slow when its queue is full and the frame it is being sent has not
# been taken for this long: a client that reads, but got a burst bigger than its
# queue between two turns of the event loop, is not dropped for the burst.
STUCK_SEND_SECONDS = 1.0
# Bursts may fill a queue this many times over before the socket is dropped anyway.
BURST_FACTOR = 4
STATUS_EVENTS = (
    Message.Encrypted,
    Message.Delivered,
    Message.Notified,
    Message.Indexed,
    Message.ProcessingFailed,
    Message.Read,
)


# The ASGI scope extension through which the server's WebSocket protocol lets the hub
# write a finished frame to the socket's transport: ``{"write": write}``, where
# ``write(wire) -> bool`` writes the bytes of one complete, unmasked server frame as
# they are, or writes nothing and answers False when the connection cannot take them
# so right now (not open, closing, paused by flow control, or a negotiated extension
# such as permessage-deflate would have to re-encode them).
FRAMES_EXTENSION = "courier.websocket.frames"
WriteFrame = Callable[[bytes], bool]


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


class Outgoing:
    """A frame made once for an event: its text and its bytes on the wire.

    A server's frames are not masked, so the bytes of one text frame are the same for
    every socket that gets it.
    """

    __slots__ = ("text", "wire")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wire = wire_frame(text)


def wire_frame(text: str) -> bytes:
    """One complete, unmasked text frame (what the server would write without extensions)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def frame_writer(websocket: WebSocket) -> WriteFrame | None:
    """The server's direct frame writer for this socket, if it offers one."""
    entry = websocket.scope.get("extensions", {}).get(FRAMES_EXTENSION)
    write = entry.get("write") if isinstance(entry, dict) else None
    return write if callable(write) else None


def new_frame(position: int, message: dict[str, Any]) -> dict[str, Any]:
    """``message.new``: its cursor is the log position of the delivery."""
    return {"type": "message.new", "cursor": str(position), "message": message}


def status_frame(event: Any, body: dict[str, Any]) -> dict[str, Any]:
    """``message.status``: a stage reached, or (``Read``) a recipient's read receipt."""
    frame = {
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
    if isinstance(event, Message.Read):
        frame["readBy"] = event.reader_id
    return frame


class Subscriber:
    """One connected socket: who it is, its bounded send queue, its subscriptions."""

    def __init__(
        self,
        websocket: WebSocket,
        ctx: Context,
        queue_size: int,
        write: WriteFrame | None = None,
    ) -> None:
        self.websocket = websocket
        self.ctx = ctx
        self.queue_size = queue_size
        self.queue: deque[str | Outgoing] = deque()
        self.pending = asyncio.Event()
        self.sending_since: float | None = None  # set while a frame is with the socket
        self.conversations: set[str] = set()
        self.too_slow = asyncio.Event()
        self.write = write
        # Live once ``send_queued`` runs: before that (backlog, ``ready``) frames only queue.
        self.live = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.ctx.tenant_id, self.ctx.actor_id)

    def offer(self, frame: str | Outgoing) -> None:
        """Send or queue a frame (on the event loop); a client that cannot keep up is dropped."""
        if self.too_slow.is_set():
            return
        # Straight to the socket when nothing is ahead of it and the socket takes it now:
        # no queue, no task to wake.
        if self.live and not self.queue and self.sending_since is None and self._write(frame):
            return
        if len(self.queue) >= self.queue_size and self._stuck():
            log.warning("dropping a slow WebSocket client (send queue full)")
            self.too_slow.set()
            return
        self.queue.append(frame)
        self.pending.set()

    def _write(self, frame: str | Outgoing) -> bool:
        if self.write is None:
            return False
        return self.write(frame.wire if isinstance(frame, Outgoing) else wire_frame(frame))

    def _stuck(self) -> bool:
        """Whether the socket, not the burst, is why the queue is full."""
        if len(self.queue) >= self.queue_size * BURST_FACTOR:
            return True
        since = self.sending_since
        return since is not None and time.monotonic() - since > STUCK_SEND_SECONDS

    async def next_frame(self) -> str | Outgoing:
        while not self.queue:
            self.pending.clear()
            await self.pending.wait()
        return self.queue.popleft()

    async def send_queued(self) -> None:
        """Send queued frames in order until the session ends; from now on frames are live."""
        self.live = True
        while True:
            frame = await self.next_frame()
            self.sending_since = time.monotonic()
            if not self._write(frame):
                # Through the ASGI send: it waits while the transport is paused, and
                # fails once the connection is gone.
                text = frame.text if isinstance(frame, Outgoing) else frame
                await self.websocket.send_text(text)
            self.sending_since = None


def _offer_all(frames: list[tuple[Subscriber, Outgoing]]) -> None:
    for sub, frame in frames:
        sub.offer(frame)


class Hub:
    """Routes frames from the event log to the sockets of this process."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.users: dict[tuple[str, str], set[Subscriber]] = {}
        self.conversations: dict[str, set[Subscriber]] = {}
        self.tenants: Counter[str] = Counter()
        self.recent: OrderedDict[UUID, Message] = OrderedDict()  # follower thread only
        # The last log position whose frames have been handed out (under ``lock``): a
        # socket registered now gets live frames for every later event, none before.
        self.position = 0
        self.follower = LogFollower(
            "ws-hub",
            container.event_log,
            self.on_events,
            self._resume_from,
            batch_size=500,
            poll_interval=container.settings.poll_interval,
            skip_ahead=self._skip_while_nobody_listens,
        )
        container.messaging.on_saved(self.follower.wake)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.position = self.container.event_log.last_position()
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def _skip_while_nobody_listens(self) -> int | None:
        """With no socket here, nothing is framed: move on without decoding the log."""
        if self.tenants:
            return None
        last = self.container.event_log.last_position()
        with self.lock:
            # A socket that registered meanwhile was told its frames begin after the
            # current position: then the events up to ``last`` must be read after all.
            if self.tenants:
                return None
            self.position = max(self.position, last)
            return self.position

    def _resume_from(self) -> int:
        with self.lock:
            return self.position

    def connections_of(self, ctx: Context) -> int:
        with self.lock:
            return len(self.users.get((ctx.tenant_id, ctx.actor_id), ()))

    def register(self, sub: Subscriber) -> int:
        """Add a socket; the returned position is where its live frames begin (after it)."""
        with self.lock:
            self.users.setdefault(sub.key, set()).add(sub)
            self.tenants[sub.ctx.tenant_id] += 1
            return self.position

    def unregister(self, sub: Subscriber) -> None:
        with self.lock:
            subs = self.users.get(sub.key)
            if subs is None or sub not in subs:
                return
            subs.discard(sub)
            if not subs:
                del self.users[sub.key]
            self.tenants[sub.ctx.tenant_id] -= 1
            if self.tenants[sub.ctx.tenant_id] <= 0:
                del self.tenants[sub.ctx.tenant_id]
            for cid in sub.conversations:
                watchers = self.conversations.get(cid, set())
                watchers.discard(sub)
                if not watchers:
                    self.conversations.pop(cid, None)

    def subscribe(self, sub: Subscriber, conversation_id: str) -> None:
        with self.lock:
            sub.conversations.add(conversation_id)
            self.conversations.setdefault(conversation_id, set()).add(sub)

    def on_events(self, batch: Sequence[Positioned]) -> None:
        """On the follower thread: frames for each event, handed to the event loop."""
        loop = self.loop
        if loop is None:
            return
        frames: list[tuple[Subscriber, Outgoing]] = []
        for position, event in batch:
            message = self._message_for(event)
            with self.lock:
                if message is not None:
                    frames.extend(self.frames_for(position, event, message))
                self.position = position
        if frames:
            # One hand-over for the whole batch: the event loop wakes once, not per event.
            loop.call_soon_threadsafe(_offer_all, frames)

    def _message_for(self, event: Any) -> Message | None:
        """The message an event is about, if it makes frames and anyone here may get them.

        Messages seen lately are kept and moved on by each of their events, so that a
        group message's many ``Delivered`` events do not each load it from the store;
        a message created while anyone of its tenant is here is kept from its
        ``Created`` event (already read and decoded), so it is not loaded at all.
        """
        if not isinstance(event, Message.Event):
            return None
        if isinstance(event, Message.Created):
            self._seed(event)
            return None
        message = self._advance(event)
        if not isinstance(event, STATUS_EVENTS):
            return None
        tenant = event.meta.get("tenant_id", "")
        with self.lock:
            if not self.tenants.get(tenant):
                return None
        if message is None:
            try:
                loaded = self.container.messaging.get_message(tenant, event.originator_id)
            except CourierError:
                return None
            # A copy of its own: the hub moves it on, which must not touch what the
            # application (or its repository's cache, if configured) holds.
            message = copy.deepcopy(loaded)
            self._keep(message)
        return message

    def _seed(self, event: Message.Created) -> None:
        with self.lock:
            if not self.tenants.get(event.meta.get("tenant_id", "")):
                return
        message = event.mutate(None)
        if isinstance(message, Message):
            self._keep(message)

    def _advance(self, event: Any) -> Message | None:
        """The kept message, brought up to ``event`` (None if not kept or out of step)."""
        message = self.recent.get(event.originator_id)
        if message is None:
            return None
        self.recent.move_to_end(event.originator_id)
        if event.originator_version == message.version + 1:
            event.mutate(message)
        elif event.originator_version > message.version:
            del self.recent[event.originator_id]  # a gap: load it afresh when needed
            return None
        return message

    def _keep(self, message: Message) -> None:
        self.recent[message.id] = message
        while len(self.recent) > RECENT_MESSAGES:
            self.recent.popitem(last=False)

    def frames_for(
        self, position: int, event: Any, message: Message
    ) -> list[tuple[Subscriber, Outgoing]]:
        """Who gets which frame (called with ``lock`` held); each frame is made once."""
        tenant = message.tenant_id
        body = message_dict(message)
        out: list[tuple[Subscriber, Outgoing]] = []
        if isinstance(event, Message.Delivered):
            recipients = [
                sub
                for user in (*event.online, *event.offline)
                for sub in self.users.get((tenant, user), ())
            ]
            if recipients:
                new = Outgoing(dumps(new_frame(position, body)))
                out.extend((sub, new) for sub in recipients)
        watchers = set(self.users.get((tenant, message.sender_id), ()))
        watchers.update(
            sub
            for sub in self.conversations.get(body["conversationId"], ())
            if sub.ctx.tenant_id == tenant and message.may_see(sub.ctx.actor_id)
        )
        if watchers:
            status = Outgoing(dumps(status_frame(event, body)))
            out.extend((sub, status) for sub in watchers)
        return out
