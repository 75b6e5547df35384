"""Frames written straight to a socket's transport: made once, in order, only when taken."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from starlette.websockets import WebSocket
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side

from domain.events import Context
from interfaces.http.hub import FRAMES_EXTENSION, Outgoing, Subscriber, frame_writer, wire_frame
from tests.unit.test_hub_queue import Socket, run, until


class Transport:
    """A server's direct writer: takes whole frames while open, refuses them when told."""

    def __init__(self) -> None:
        self.wire: list[bytes] = []
        self.takes = True

    def write(self, wire: bytes) -> bool:
        if self.takes:
            self.wire.append(wire)
        return self.takes


def subscriber(socket: Socket, transport: Transport, queue_size: int = 4) -> Subscriber:
    ctx = Context(actor_id="u", tenant_id="t")
    return Subscriber(cast(WebSocket, socket), ctx, queue_size, transport.write)


def texts(wire: list[bytes]) -> list[str]:
    """What a client reads from these bytes, with a real WebSocket parser."""
    client = Protocol(Side.CLIENT)
    client.receive_data(b"".join(wire))
    frames = [f for f in client.events_received() if isinstance(f, Frame)]
    assert all(f.opcode is Opcode.TEXT and f.fin for f in frames)
    return [bytes(f.data).decode() for f in frames]


def test_a_wire_frame_is_what_a_client_reads_at_every_length() -> None:
    lengths = (0, 125, 126, 65535, 65536)  # every length encoding of RFC 6455
    assert texts([wire_frame("x" * n) for n in lengths]) == ["x" * n for n in lengths]
    assert texts([wire_frame('{"type":"pong","é":1}')]) == ['{"type":"pong","é":1}']


def test_one_frame_is_encoded_once_and_its_bytes_shared_by_every_socket() -> None:
    async def scenario() -> tuple[list[Transport], Outgoing]:
        frame = Outgoing('{"type":"message.new"}')
        pairs = [(Transport(), Socket()) for _ in range(3)]
        subs = [subscriber(socket, transport) for transport, socket in pairs]
        senders = [asyncio.ensure_future(sub.send_queued()) for sub in subs]
        await until(lambda: all(sub.live for sub in subs), "senders running")
        for sub in subs:
            sub.offer(frame)
        for sender in senders:
            sender.cancel()
        return [transport for transport, _ in pairs], frame

    transports, frame = run(scenario())
    assert all(t.wire == [frame.wire] and t.wire[0] is frame.wire for t in transports)


def test_nothing_is_written_before_the_session_is_live() -> None:
    """Frames routed during the backlog wait for ``ready``, then go in order."""

    async def scenario() -> Transport:
        transport, socket = Transport(), Socket()
        socket.open.set()
        sub = subscriber(socket, transport)
        sub.offer(Outgoing("live-1"))  # before send_queued: the backlog is still going out
        assert transport.wire == [] and len(sub.queue) == 1
        sender = asyncio.ensure_future(sub.send_queued())
        await until(lambda: not sub.queue and sub.sending_since is None, "queue drained")
        sub.offer(Outgoing("live-2"))
        sender.cancel()
        return transport

    assert texts(run(scenario()).wire) == ["live-1", "live-2"]


def test_a_socket_that_refuses_gets_its_frames_in_order_through_the_send() -> None:
    """Paused (or a connection that cannot take raw frames): queue, then the ASGI send."""

    async def scenario() -> tuple[Transport, Socket, Subscriber]:
        transport, socket = Transport(), Socket()
        sub = subscriber(socket, transport, queue_size=8)
        sender = asyncio.ensure_future(sub.send_queued())
        await until(lambda: sub.live, "sender running")
        sub.offer(Outgoing("1"))  # written
        transport.takes = False
        sub.offer(Outgoing("2"))  # refused: queued, the sender waits on the socket
        await until(lambda: sub.sending_since is not None, "frame 2 with the socket")
        transport.takes = True
        sub.offer(Outgoing("3"))  # frame 2 is not through yet: 3 must wait behind it
        assert list(map(text_of, sub.queue)) == ["3"] and transport.wire == [wire_frame("1")]
        socket.open.set()
        await until(lambda: not sub.queue and sub.sending_since is None, "queue drained")
        sub.offer("4")  # a plain text frame (pong, error) takes the same way
        sender.cancel()
        return transport, socket, sub

    transport, socket, sub = run(scenario())
    assert texts(transport.wire) == ["1", "3", "4"]
    assert socket.sent == ["2"]
    assert not sub.too_slow.is_set()


def test_the_writer_comes_from_the_servers_scope_extension() -> None:
    transport = Transport()

    class Scoped:
        def __init__(self, scope: dict[str, Any]) -> None:
            self.scope = scope

    offered = Scoped({"extensions": {FRAMES_EXTENSION: {"write": transport.write}}})
    assert frame_writer(cast(WebSocket, offered)) == transport.write
    assert frame_writer(cast(WebSocket, Scoped({"extensions": {}}))) is None
    assert frame_writer(cast(WebSocket, Scoped({}))) is None


def text_of(frame: str | Outgoing) -> str:
    return frame.text if isinstance(frame, Outgoing) else frame
