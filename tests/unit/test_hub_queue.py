"""A socket's send queue: a burst is absorbed, a socket that takes nothing is dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from starlette.websockets import WebSocket

from domain.events import Context
from interfaces.http import hub
from interfaces.http.hub import Subscriber


class Socket:
    """Takes frames when told to; until then a send waits, as on a full kernel buffer."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.open = asyncio.Event()

    async def send_text(self, text: str) -> None:
        await self.open.wait()
        self.sent.append(text)


def subscriber(socket: Socket, queue_size: int) -> Subscriber:
    return Subscriber(cast(WebSocket, socket), Context(actor_id="u", tenant_id="t"), queue_size)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def until(condition: Callable[[], bool], what: str, turns: int = 1000) -> None:
    """Give the event loop turns until ``condition`` holds; fail after ``turns``."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)  # one turn of the loop, not a timed wait
    raise AssertionError(f"not within {turns} turns of the event loop: {what}")


def test_a_burst_larger_than_the_queue_is_sent_whole_to_a_reading_client() -> None:
    async def scenario() -> list[str]:
        socket = Socket()
        socket.open.set()
        sub = subscriber(socket, 4)
        sender = asyncio.ensure_future(sub.send_queued())
        for n in range(12):  # more than the queue, before the sender gets a turn
            sub.offer(str(n))
        await until(lambda: len(socket.sent) == 12 or sub.too_slow.is_set(), "12 frames sent")
        sender.cancel()
        assert not sub.too_slow.is_set()
        return socket.sent

    assert run(scenario()) == [str(n) for n in range(12)]


def test_a_socket_that_takes_nothing_is_dropped_once_its_queue_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub, "STUCK_SEND_SECONDS", -1.0)  # any send under way is stuck

    async def scenario() -> Subscriber:
        sub = subscriber(Socket(), 4)
        sender = asyncio.ensure_future(sub.send_queued())
        sub.offer("first")  # the sender takes it and waits on the socket
        await until(lambda: sub.sending_since is not None, "the first frame with the socket")
        for n in range(4):
            sub.offer(str(n))
        assert not sub.too_slow.is_set()  # full, not over
        sub.offer("one more")
        sender.cancel()
        return sub

    sub = run(scenario())
    assert sub.too_slow.is_set()
    assert list(sub.queue) == ["0", "1", "2", "3"]


def test_a_queue_many_times_over_is_dropped_even_while_sends_are_recent() -> None:
    sub = subscriber(Socket(), 2)
    for n in range(2 * hub.BURST_FACTOR):
        sub.offer(str(n))
    assert not sub.too_slow.is_set()
    sub.offer("over")
    assert sub.too_slow.is_set()
