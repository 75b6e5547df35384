"""uvicorn's HTTP/1.1 protocol (httptools) with deadlines for slow clients and JSON refusals.

uvicorn times out idle keep-alive connections, but not a client that sends its request
a byte at a time (slowloris): one that has not finished its headers within
``HTTP_HEADER_TIMEOUT_SECONDS`` of its first byte (or of connecting), or its body within
``HTTP_BODY_TIMEOUT_SECONDS`` of its headers, is answered 408 and cut off. A request line
and headers still unfinished past ``HTTP_MAX_HEADER_BYTES`` are refused with 431 (llhttp
sets no limit of its own; finished headers over the cap are refused by
``interfaces.http.middleware.RequestLimits``), and requests the parser cannot read with
400, both in the API's error format instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from interfaces.http.corked import CorkedTransport
from interfaces.http.middleware import SECURITY_HEADERS

log = logging.getLogger("courier.http")

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
_SECURITY = b"".join(
    k.lower().encode() + b": " + v.encode() + b"\r\n" for k, v in SECURITY_HEADERS.items()
)


class Phase(enum.Enum):
    """Where the client is in its current request."""

    HEAD = "head"  # connected, or between requests, or sending its request line and headers
    BODY = "body"  # headers complete, body still coming
    DONE = "done"  # the whole request arrived


class GuardedProtocol(HttpToolsProtocol):
    """One connection; subclasses made by ``guarded_protocol`` carry the limits."""

    header_timeout = 10.0
    body_timeout = 30.0
    max_header_bytes = DEFAULT_MAX_HEADER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = Phase.HEAD
        self.head_bytes = 0
        self._headers_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ---- the connection's life ------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # An answer's head and body leave in one write (interfaces/http/corked.py).
        corked = CorkedTransport(transport, self.loop)
        super().connection_made(corked)  # type: ignore[arg-type]
        self._arm_headers()

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol writes to the socket itself: frames already go out
        # whole, and the hub measures each socket's own write buffer.
        corked = self.transport
        if isinstance(corked, CorkedTransport):
            corked.flush()
            self.transport = corked.raw
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self.phase is not Phase.BODY:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._cancel()  # closed, or handed over to the WebSocket protocol
            return
        self._follow()

    def _follow(self) -> None:
        """Arm or disarm the deadlines for where the client is in its request."""
        if self.phase is Phase.HEAD:
            if self.head_bytes > self.max_header_bytes:
                message = (
                    f"the request line and headers are larger than {self.max_header_bytes} bytes"
                )
                self._refuse(431, "headers_too_large", message)
                return
            self._arm_headers()
        elif self.phase is Phase.BODY:
            self._cancel_headers()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.body_timeout, self._too_slow)
        else:
            self._cancel()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    # ---- parser callbacks: the request's phases -------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # Between the requests of a keep-alive connection uvicorn's idle timeout rules
        # until the next request's first byte arrives; from then on, the header deadline.
        self.phase = Phase.HEAD

    def on_headers_complete(self) -> None:
        self.phase = Phase.BODY
        self.head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.phase = Phase.DONE
        super().on_message_complete()

    def _arm_headers(self) -> None:
        if self._headers_timer is None:
            self._headers_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._headers_timer = self._body_timer = None
        if self.transport.is_closing() or self.phase is Phase.DONE:
            return
        what = "headers" if self.phase is Phase.HEAD else "body"
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closing the connection of %s: its request %s came too slowly", client, what)
        if self.cycle is not None and self.phase is Phase.BODY:
            # The application may be waiting for the rest of the body: it is not coming.
            started = self.cycle.response_started
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            if started:
                self.transport.close()
                return
        timeout = self.header_timeout if self.phase is Phase.HEAD else self.body_timeout
        self._refuse(408, "request_timeout", f"the request {what} took longer than {timeout:g} s")

    # ---- refusals ---------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The headers were fine and the application is running; the body is broken.
            # Whatever the application still sends must go nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._cancel()
                self.transport.close()
                return
        self._refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._cancel()
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": {"code": code, "message": message, "details": []}})
        self.transport.write(
            b"".join(
                (
                    STATUS_LINE[status],
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n",
                    _SECURITY,
                    b"\r\n",
                    body,
                )
            )
        )
        self.transport.close()

    def _cancel_headers(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _cancel_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel(self) -> None:
        self._cancel_headers()
        self._cancel_body()


def guarded_protocol(
    header_timeout: float, body_timeout: float, max_header_bytes: int
) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's ``http=`` with these deadlines and header cap."""
    return type(
        "CourierHttpProtocol",
        (GuardedProtocol,),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "max_header_bytes": max_header_bytes,
        },
    )


FRAMES_EXTENSION = "courier.websocket.frames"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, without its false alarm after a refused handshake,
    and with a way to write a frame encoded once for many sockets.

    A handshake refused with an HTTP answer (401, 429, 431) is complete once that answer
    is sent; uvicorn does not note it, and logs "returned without completing handshake".
    The ASGI scope extension ``courier.websocket.frames`` offers ``write(wire)``: the
    WebSocket hub encodes a server frame once per event and writes the same bytes to
    every socket that is keeping up (interfaces/http/hub.py).
    """

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope.setdefault("extensions", {})[FRAMES_EXTENSION] = {"write": self.write_frame}

    def write_frame(self, wire: bytes) -> bool:
        """Write one finished, unmasked server frame as is; False (nothing written) if the
        socket cannot take it now (paused, closing, or with an extension that changes frames)."""
        if (
            not self.writable.is_set()
            or self.close_sent
            or self.disconnected
            or self.conn.state is not State.OPEN
            or self.conn.extensions
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(wire)
        return True

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
