"""The load generator's connections: pre-encoded requests, one in flight per connection.

Requests go out on pooled HTTP/1.1 keep-alive connections through an asyncio protocol,
and each answer is parsed by httptools — no task, future, request or response object
per call (benchmarks/load.py drives them).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx
import orjson

from benchmarks.calls import Call, LoadResult, OnResponse

# Idle connections are dropped before uvicorn's keep-alive timeout (5 s) would close them
# under a request just sent (an error that is the harness's, not the server's).
IDLE_EXPIRY_S = 3.0
TIMEOUT_S = 120.0

# A target: the server's base URL, or an httpx client whose base URL is used.
Target = str | httpx.AsyncClient


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


class Connection(asyncio.Protocol):
    """One keep-alive connection, one request in flight at a time."""

    def __init__(self, pool: Pool) -> None:
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


class Pool:
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
        self.idle: list[Connection] = []
        self.pending: deque[Job] = deque()
        self.connections: list[Connection] = []
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

    def answered(self, conn: Connection, job: Job, status: int, body: bytes) -> None:
        now = time.perf_counter()
        self.codes[status] += 1
        if 200 <= status < 300:
            self.result.latencies.append(now - job[2])
            if self.on_response is not None:
                self.on_response(job[0], status, body)
        if not conn.closed:
            self._free(conn, now)
        self._done()

    def lost(self, conn: Connection, job: Job | None, failure: str) -> None:
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

    def _free(self, conn: Connection, now: float) -> None:
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
                lambda: Connection(self), self.address.host, self.address.port
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
