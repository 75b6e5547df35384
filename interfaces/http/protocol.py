"""uvicorn's HTTP/1.1 protocol (h11) with deadlines for slow clients and JSON refusals.

uvicorn times out idle keep-alive connections, but not a client that sends its request
a byte at a time (slowloris): one that has not finished its headers within
``HTTP_HEADER_TIMEOUT_SECONDS`` of its first byte (or of connecting), or its body within
``HTTP_BODY_TIMEOUT_SECONDS`` of its headers, is answered 408 and cut off. Requests h11
cannot parse (headers over ``HTTP_MAX_HEADER_BYTES``: 431; otherwise 400) are refused in
the API's error format instead of uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from interfaces.http.middleware import SECURITY_HEADERS

log = logging.getLogger("courier.http")

DEFAULT_MAX_HEADER_BYTES = 16 * 1024


class _Connection(h11.Connection):
    """Remembers why the last request could not be parsed (h11 knows 400 from 431)."""

    def __init__(self, max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
        self.last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as error:
            self.last_error = error
            raise


class GuardedH11Protocol(H11Protocol):
    """One connection; subclasses made by ``guarded_protocol`` carry the limits."""

    header_timeout = 10.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        size = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEADER_BYTES
        self.max_header_bytes = size
        self.conn = _Connection(size)
        self._headers_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # ---- the connection's life ------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Arm or disarm the deadlines for where the client is in its request."""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._cancel()  # closed, or handed over to the WebSocket protocol
            return
        state = self.conn.their_state
        if state is h11.IDLE and self._waiting_for_request():
            if self._headers_timer is None:
                self._headers_timer = self.loop.call_later(self.header_timeout, self._too_slow)
            return
        self._cancel_headers()
        if state is h11.SEND_BODY:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.body_timeout, self._too_slow)
        else:
            self._cancel_body()

    def _waiting_for_request(self) -> bool:
        # Between the requests of a keep-alive connection uvicorn's idle timeout rules
        # until the next request's first byte arrives.
        return self.cycle is None or bool(self.conn.trailing_data[0])

    def _too_slow(self) -> None:
        self._headers_timer = self._body_timer = None
        state = self.conn.their_state
        if self.transport.is_closing() or state not in (h11.IDLE, h11.SEND_BODY):
            return
        what = "headers" if state is h11.IDLE else "body"
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closing the connection of %s: its request %s came too slowly", client, what)
        if self.cycle is not None and state is h11.SEND_BODY:
            # The application may be waiting for the rest of the body: it is not coming.
            started = self.cycle.response_started
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            if started:
                self.transport.close()
                return
        timeout = self.header_timeout if state is h11.IDLE else self.body_timeout
        self._refuse(408, "request_timeout", f"the request {what} took longer than {timeout:g} s")

    # ---- refusals ---------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The headers were fine and the application is running; the body is broken.
            # Whatever the application still sends must go nowhere (uvicorn would hand
            # it to h11 after this refusal, and fail with a traceback).
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self._cancel()
                self.transport.close()
                return
        error = self.conn.last_error if isinstance(self.conn, _Connection) else None
        if error is not None and error.error_status_hint == 431:
            message = f"the request line and headers are larger than {self.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", message)
        else:
            self._refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": {"code": code, "message": message, "details": []}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
        ]
        try:
            for event in (
                h11.Response(status_code=status, headers=headers),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:
            pass  # a response was under way: closing is all that is left
        self._cancel()
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


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` with these deadlines."""
    return type(
        "CourierH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, without its false alarm after a refused handshake.

    A handshake refused with an HTTP answer (401, 429, 431) is complete once that answer
    is sent; uvicorn does not note it, and logs "returned without completing handshake".
    """

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
