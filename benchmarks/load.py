"""HTTP load: closed loop (N clients back to back) and open loop (a fixed offered rate).

The generator has to cost little next to the server it measures, on the same two cores.
Every request is encoded to bytes before the clock starts (orjson bodies, tokens minted
beforehand); requests go out on pooled HTTP/1.1 keep-alive connections through an asyncio
protocol, one request in flight per connection, and each answer is parsed by httptools —
no task, future, request or response object per call. ``run`` drives it on uvloop. Its
own CPU time over each run is in every summary (``generatorCpuMsPerRequest``), so a
reader can see what the measurement cost.

The open loop measures each latency from the request's *scheduled* send time, so a
server that falls behind shows up in the percentiles instead of slowing the senders down
(no coordinated omission); a generator that wakes late sends everything already due at
once and the lateness counts in the latency, it is not hidden.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import httptools
import httpx
import orjson
import uvloop

from benchmarks.stats import latency_summary, rate

T = TypeVar("T")

GENERATOR = "asyncio protocol + httptools on uvloop, pre-encoded HTTP/1.1 keep-alive, 1 process"
OPEN_LOOP_CONNECTIONS = 256
WARM_CONNECTIONS = 64  # opened before an open loop starts; more on demand up to the limit
# Idle connections are dropped before uvicorn's keep-alive timeout (5 s) would close them
# under a request just sent (an error that is the harness's, not the server's).
IDLE_EXPIRY_S = 3.0
TIMEOUT_S = 120.0
MIN_SLEEP_S = 0.001  # uvloop runs a shorter timer at once: waiting less would spin

# A target: the server's base URL, or an httpx client whose base URL is used.
Target = str | httpx.AsyncClient


@dataclass(frozen=True)
class Call:
    """One prepared HTTP request."""

    method: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]


OnResponse = Callable[[int, int, bytes], None]  # (index of the call, status, body)


@dataclass
class LoadResult:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    statuses: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    send_wall: float = 0.0  # open loop: from the first scheduled send to the last written
    # Open loop: how late each request went on the wire (written - scheduled), in seconds.
    # Small when the generator keeps its schedule; large when every connection is busy.
    send_lags: list[float] = field(default_factory=list)
    # Requests that found every open connection busy (waiting on the server) and queued here.
    queued: int = 0
    cpu: float = 0.0  # the generator process's CPU seconds (user + system) over the run

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
            **_lags(self.send_lags),
            "queuedForConnection": self.queued,
            "generatorCpuS": round(self.cpu, 3),
            "generatorCpuMsPerRequest": round(1000 * self.cpu / self.sent, 3)
            if self.sent
            else None,
            "generatorCores": round(self.cpu / self.wall, 2) if self.wall > 0 else None,
        }


def _lags(lags: list[float]) -> dict[str, float | None]:
    if not lags:
        return {}
    figures = latency_summary(lags)
    return {"sendLagP50Ms": figures["p50Ms"], "sendLagP99Ms": figures["p99Ms"]}


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


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def of(cls, target: Target) -> Address:
        url = urlsplit(str(target.base_url) if isinstance(target, httpx.AsyncClient) else target)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"the load generator speaks plain http://host:port, not {url!r}")
        return cls(url.hostname, url.port or 80)

    def encode(self, call: Call) -> bytes:
        """The whole request as it goes on the wire."""
        body = b"" if call.body is None else orjson.dumps(call.body)
        lines = [f"{call.method} {call.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in call.headers.items()]
        if call.body is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


Job = tuple[int, bytes, float]  # (index of the call, request bytes, latency measured since)


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport  # set by connection_made, before any use
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.job: Job | None = None
        self.sent_at = 0.0
        self.idle_since = 0.0
        self.closed = False
        self.failure = "ConnectionLost"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, job: Job) -> None:
        self.job = job
        self.sent_at = now = time.perf_counter()
        self.transport.write(job[1])
        pool = self.pool
        pool.last_write = now
        if pool.lags is not None:
            pool.lags.append(now - job[2])

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort("RemoteProtocolError")

    def on_body(self, body: bytes) -> None:
        if self.pool.on_response is not None:
            self.body.append(body)

    def on_message_complete(self) -> None:
        job, self.job = self.job, None
        if job is None:  # an answer nobody asked for
            self.abort("RemoteProtocolError")
            return
        body = b"".join(self.body) if self.body else b""
        self.body = []
        keep = self.parser.should_keep_alive()
        if not keep:
            self.close()
        self.pool.answered(self, job, self.parser.get_status_code(), body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        job, self.job = self.job, None
        self.pool.lost(self, job, self.failure)

    def abort(self, failure: str) -> None:
        self.failure = failure
        self.closed = True
        self.transport.abort()

    def close(self) -> None:
        self.closed = True
        self.transport.close()


class _Pool:
    """Connections to one server; jobs wait in a FIFO when every connection is busy."""

    def __init__(
        self,
        address: Address,
        limit: int,
        result: LoadResult,
        on_response: OnResponse | None,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.address = address
        self.limit = limit
        self.result = result
        self.on_response = on_response
        self.timeout = timeout
        self.lags: list[float] | None = None  # open loop: write time - scheduled time
        self.last_write = 0.0
        self.codes: Counter[int] = Counter()
        self.idle: list[_Connection] = []
        self.pending: deque[Job] = deque()
        self.connections: list[_Connection] = []
        self.opening = 0
        self.outstanding = 0
        self.closing = False
        self.refill: Callable[[], None] | None = None  # closed loop: start the next call
        self.waiter: asyncio.Future[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.sweeper = self.loop.create_task(self._sweep())

    async def warm(self, count: int) -> None:
        """Open ``count`` connections before the clock starts."""
        self.opening += count
        await asyncio.gather(*(self._connect() for _ in range(count)))

    def submit(self, job: Job) -> None:
        self.outstanding += 1
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed and job[2] - conn.idle_since < IDLE_EXPIRY_S:
                conn.send(job)
                return
            conn.close()
        self.pending.append(job)
        self.result.queued += 1
        if len(self.connections) + self.opening < self.limit:
            self._open()

    def answered(self, conn: _Connection, job: Job, status: int, body: bytes) -> None:
        now = time.perf_counter()
        self.codes[status] += 1
        if 200 <= status < 300:
            self.result.latencies.append(now - job[2])
            if self.on_response is not None:
                self.on_response(job[0], status, body)
        if not conn.closed:
            self._free(conn, now)
        self._done()

    def lost(self, conn: _Connection, job: Job | None, failure: str) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if job is not None:
            self.result.statuses[failure] += 1
            self._done()
        if self.pending and not self.closing and len(self.connections) + self.opening < self.limit:
            self._open()

    async def drained(self) -> None:
        """Until every job submitted so far is answered or failed."""
        if self.outstanding:
            self.waiter = self.loop.create_future()
            await self.waiter

    def close(self) -> None:
        self.closing = True
        self.sweeper.cancel()
        for conn in list(self.connections):
            conn.close()
        for status, count in self.codes.items():
            self.result.statuses[str(status)] += count

    def _free(self, conn: _Connection, now: float) -> None:
        if self.pending:
            conn.send(self.pending.popleft())
        else:
            conn.idle_since = now
            self.idle.append(conn)

    def _done(self) -> None:
        self.outstanding -= 1
        if self.refill is not None:
            self.refill()
        if not self.outstanding and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _open(self) -> None:
        self.opening += 1
        task = self.loop.create_task(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.address.host, self.address.port
            )
        except OSError:
            self.opening -= 1
            if self.pending:  # one waiting job fails per failed attempt: bounded
                self.pending.popleft()
                self.result.statuses["ConnectError"] += 1
                self._done()
            if self.pending and len(self.connections) + self.opening < self.limit:
                self._open()
            return
        self.opening -= 1
        self.connections.append(conn)
        self._free(conn, time.perf_counter())

    async def _sweep(self) -> None:
        """Abort the connections whose answer is overdue (once a second)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            for conn in list(self.connections):
                if conn.job is not None and now - conn.sent_at > self.timeout:
                    conn.abort("ReadTimeout")


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
    pool = _Pool(address, clients, result, on_response)
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
    pool = _Pool(address, connections, result, on_response)
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
