"""A lean WebSocket client that only listens, for benchmarks with thousands of sockets.

A benchmark's client shares the machine's cores with the server it measures: with
2,000 sockets in one process, a full client library's work per frame (its parser,
queues and a task woken per frame) adds up to hundreds of milliseconds that would be
counted as the server's. This client is an ``asyncio.Protocol``: the handshake (it
offers permessage-deflate, as browsers do, and inflates compressed frames if the
server accepts it), then each complete text message is handed to a callback as bytes,
as soon as the bytes are read. Pings are answered, a close is echoed. RFC 6455; not
for anything but benchmarks (it trusts the server it talks to).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from typing import cast

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


class HandshakeError(Exception):
    pass


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame: always masked (RFC 6455 §5.3); control payloads are short."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


class Listener(asyncio.Protocol):
    """One socket: ``on_text(payload)`` for every complete text message."""

    def __init__(self, host: str, port: int, path: str, on_text: Callable[[bytes], None]) -> None:
        self.on_text = on_text
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.buffer = bytearray()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflate: zlib._Decompress | None = None  # set when permessage-deflate was accepted
        self.parts: list[bytes] = []  # a fragmented message so far
        self.compressed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open and not self._handshake():
            return
        self._frames()

    def _handshake(self) -> bool:
        """Whether the socket is open now (False: not yet, or refused and closed)."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.opened.done():
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        refused = None
        if not head[0].startswith("HTTP/1.1 101"):
            refused = head[0]
        elif headers.get("sec-websocket-accept", "").encode() != self.accept:
            refused = "wrong Sec-WebSocket-Accept"
        if refused is not None:
            self.opened.set_exception(HandshakeError(refused))
            if self.transport is not None:
                self.transport.close()
            return False
        if "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            self.inflate = zlib.decompressobj(-15)  # decodes any smaller window too
        self.open = True
        self.opened.set_result(None)
        return True

    def _frames(self) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            length, start = second & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                (length,), start = struct.unpack_from("!H", buf, 2), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                (length,), start = struct.unpack_from("!Q", buf, 2), 10
            if len(buf) < start + length:
                return
            payload = bytes(buf[start : start + length])
            del buf[: start + length]
            self._frame(first, payload)

    def _frame(self, first: int, payload: bytes) -> None:
        opcode, fin = first & 0x0F, bool(first & 0x80)
        if opcode in (TEXT, BINARY):
            self.parts, self.compressed = [payload], bool(first & 0x40)
        elif opcode == CONTINUATION:
            self.parts.append(payload)
        elif opcode == PING:
            self._send(masked_frame(PONG, payload))
            return
        elif opcode == CLOSE:
            self._send(masked_frame(CLOSE, payload[:2]))
            if self.transport is not None:
                self.transport.close()
            return
        else:
            return
        if fin:
            message = b"".join(self.parts)
            self.parts = []
            if self.compressed and self.inflate is not None:
                message = self.inflate.decompress(message + b"\x00\x00\xff\xff")
            self.on_text(message)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def close(self) -> None:
        """Close normally (1000) and wait for the connection to end."""
        self._send(masked_frame(CLOSE, struct.pack("!H", 1000)))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            if self.transport is not None:
                self.transport.close()


async def listen(
    host: str, port: int, path: str, on_text: Callable[[bytes], None], timeout: float = 60
) -> Listener:
    """An open socket (handshake done) that hands each text message to ``on_text``."""
    loop = asyncio.get_running_loop()
    _, listener = await loop.create_connection(
        lambda: Listener(host, port, path, on_text), host, port
    )
    await asyncio.wait_for(listener.opened, timeout)
    return listener
