"""What one turn of the event loop writes leaves in one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from interfaces.http.corked import CorkedTransport


class RawTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


def corked() -> tuple[CorkedTransport, RawTransport]:
    raw = RawTransport()
    return CorkedTransport(raw, asyncio.get_running_loop()), raw  # type: ignore[arg-type]


async def next_turn() -> None:
    await asyncio.sleep(0)


def test_an_answers_head_and_body_leave_in_one_write() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"ok")
        assert raw.writes == []
        assert transport.get_write_buffer_size() == 40
        await next_turn()
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
        transport.write(b"next")
        await next_turn()
        assert raw.writes[1:] == [b"next"]

    asyncio.run(scenario())


def test_closing_sends_what_was_written_first_and_aborting_drops_it() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        transport.write(b"last words")
        transport.close()
        assert raw.writes == [b"last words"] and raw.closed
        await next_turn()  # the flush already scheduled finds nothing to send
        assert raw.writes == [b"last words"]

        transport, raw = corked()
        transport.write(b"never sent")
        transport.abort()
        await next_turn()
        assert raw.writes == [] and raw.aborted

    asyncio.run(scenario())


def test_nothing_is_written_to_a_socket_already_closing() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        transport.write(b"late")
        raw.closed = True  # the peer went away before the loop came round
        await next_turn()
        assert raw.writes == []

    asyncio.run(scenario())


def test_everything_else_is_the_sockets_own() -> None:
    async def scenario() -> None:
        transport, raw = corked()
        assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
        assert transport.is_closing() is False
        raw.closed = True
        assert transport.is_closing() is True

    asyncio.run(scenario())
