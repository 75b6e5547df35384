"""HTTP load: closed loop (N clients back to back) and open loop (a fixed offered rate).

Both take a list of prepared requests and one ``httpx.AsyncClient`` with a connection
pool. The open loop measures each latency from the request's *scheduled* send time, so a
server that falls behind shows up in the percentiles instead of slowing the senders down
(no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.stats import latency_summary, rate


@dataclass(frozen=True)
class Call:
    """One prepared HTTP request."""

    method: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]


OnResponse = Callable[[int, httpx.Response], None]


@dataclass
class LoadResult:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    statuses: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    send_wall: float = 0.0  # open loop: from the first scheduled send to the last real one

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "ok": self.ok,
            "errors": self.sent - self.ok,
            "statuses": dict(sorted(self.statuses.items())),
            "wallS": round(self.wall, 3),
            "throughputPerS": rate(self.ok, self.wall),
            **latency_summary(self.latencies),
        }


def client_for(base_url: str, connections: int) -> httpx.AsyncClient:
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) would close
    # them under a request just sent (a ReadError that is the harness's, not the server's).
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=3.0
    )
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(120.0))


async def _send(
    client: httpx.AsyncClient,
    call: Call,
    index: int,
    since: float,
    result: LoadResult,
    on_response: OnResponse | None,
) -> None:
    try:
        response = await client.request(
            call.method, call.path, json=call.body, headers=call.headers
        )
    except httpx.HTTPError as error:
        result.statuses[type(error).__name__] += 1
        return
    result.statuses[str(response.status_code)] += 1
    if response.is_success:
        result.latencies.append(time.perf_counter() - since)
        if on_response is not None:
            on_response(index, response)


async def closed_loop(
    client: httpx.AsyncClient,
    calls: Sequence[Call],
    clients: int,
    on_response: OnResponse | None = None,
    seconds: float | None = None,
) -> LoadResult:
    """``clients`` workers, each sending its next call as soon as the last one answered.

    With ``seconds``, no call is started after that long (floors: bounded in time on a
    busy machine, not only in count).
    """
    result = LoadResult()
    queue = iter(enumerate(calls))
    started = time.perf_counter()
    stop_at = None if seconds is None else started + seconds

    async def worker() -> None:
        for index, call in queue:
            if stop_at is not None and time.perf_counter() > stop_at:
                return
            result.sent += 1
            await _send(client, call, index, time.perf_counter(), result, on_response)

    await asyncio.gather(*(worker() for _ in range(clients)))
    result.wall = time.perf_counter() - started
    return result


async def open_loop(
    client: httpx.AsyncClient,
    calls: Sequence[Call],
    offered_rate: float,
    on_response: OnResponse | None = None,
) -> LoadResult:
    """Send call i at ``start + i / offered_rate`` whatever the answers do."""
    result = LoadResult(sent=len(calls))
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for index, call in enumerate(calls):
        scheduled = started + index / offered_rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(
            asyncio.create_task(_send(client, call, index, scheduled, result, on_response))
        )
    result.send_wall = time.perf_counter() - started
    await asyncio.gather(*tasks)
    result.wall = time.perf_counter() - started
    return result
