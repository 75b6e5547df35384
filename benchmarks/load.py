"""HTTP load: closed loop (N clients back to back) and open loop (a fixed offered rate).

The generator has to cost little next to the server it measures, on the same two cores.
Every request is encoded to bytes before the clock starts (orjson bodies, tokens minted
beforehand); requests go out on pooled HTTP/1.1 keep-alive connections through an asyncio
protocol (benchmarks/http_pool.py), one request in flight per connection, and each answer
is parsed by httptools — no task, future, request or response object per call. ``run``
drives it on uvloop. Its own CPU time over each run is in every summary
(``generatorCpuMsPerRequest``), so a reader can see what the measurement cost.

The open loop measures each latency from the request's *scheduled* send time, so a
server that falls behind shows up in the percentiles instead of slowing the senders down
(no coordinated omission); a generator that wakes late sends everything already due at
once and the lateness counts in the latency, it is not hidden.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import httpx
import uvloop

from benchmarks.calls import Call, LoadResult, OnResponse
from benchmarks.http_pool import IDLE_EXPIRY_S, TIMEOUT_S, Address, Pool, Target

T = TypeVar("T")

__all__ = ["Call", "LoadResult", "OnResponse", "client_for", "closed_loop", "open_loop", "run"]

GENERATOR = "asyncio protocol + httptools on uvloop, pre-encoded HTTP/1.1 keep-alive, 1 process"
OPEN_LOOP_CONNECTIONS = 256
WARM_CONNECTIONS = 64  # opened before an open loop starts; more on demand up to the limit
MIN_SLEEP_S = 0.001  # uvloop runs a shorter timer at once: waiting less would spin


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop (the generator's event loop)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def client_for(base_url: str, connections: int) -> httpx.AsyncClient:
    """An httpx client for the setup calls (population), not for the measured load."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=IDLE_EXPIRY_S,
    )
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(TIMEOUT_S))


async def closed_loop(
    client: Target,
    calls: Sequence[Call],
    clients: int,
    on_response: OnResponse | None = None,
    seconds: float | None = None,
    repeat: bool = False,
) -> LoadResult:
    """``clients`` connections, each sending its next call as soon as the last one answered.

    With ``seconds``, no call is started after that long (floors: bounded in time on a
    busy machine, not only in count); with ``repeat`` too, the calls are sent over and
    over until then (the index given to ``on_response`` is the call's).
    """
    if repeat and seconds is None:
        raise ValueError("repeat needs seconds to end")
    address = Address.of(client)
    requests = [address.encode(call) for call in calls]
    result = LoadResult()
    pool = Pool(address, clients, result, on_response)
    await pool.warm(min(clients, len(requests)))
    size = len(requests)
    total = size if not repeat or not size else sys.maxsize
    cpu = time.process_time()
    started = time.perf_counter()
    stop_at = None if seconds is None else started + seconds

    def refill() -> None:
        index = result.sent
        if index >= total:
            return
        now = time.perf_counter()
        if stop_at is not None and now > stop_at:
            return
        result.sent = index + 1
        if index >= size:
            index %= size
        pool.submit((index, requests[index], now))

    pool.refill = refill
    for _ in range(clients):
        refill()
    try:
        await pool.drained()
    finally:
        pool.close()
    result.wall = time.perf_counter() - started
    result.cpu = time.process_time() - cpu
    return result


async def open_loop(
    client: Target,
    calls: Sequence[Call],
    offered_rate: float,
    on_response: OnResponse | None = None,
    connections: int = OPEN_LOOP_CONNECTIONS,
) -> LoadResult:
    """Send call i at ``start + i / offered_rate`` whatever the answers do."""
    address = Address.of(client)
    requests = [address.encode(call) for call in calls]
    total = len(requests)
    result = LoadResult(sent=total)
    pool = Pool(address, connections, result, on_response)
    pool.lags = result.send_lags
    await pool.warm(min(connections, WARM_CONNECTIONS, total))
    cpu = time.process_time()
    started = time.perf_counter()
    index = 0
    try:
        while index < total:
            due = min(total, int((time.perf_counter() - started) * offered_rate) + 1)
            while index < due:
                pool.submit((index, requests[index], started + index / offered_rate))
                index += 1
            if index < total:
                wait = started + index / offered_rate - time.perf_counter()
                await asyncio.sleep(max(wait, MIN_SLEEP_S))
        await pool.drained()
    finally:
        pool.close()
    result.wall = time.perf_counter() - started
    result.cpu = time.process_time() - cpu
    result.send_wall = pool.last_write - started if pool.last_write else result.wall
    return result
