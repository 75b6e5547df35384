"""WebSocket fan-out: N subscribers on one API process receive a group message.

    .venv/bin/python -m benchmarks.ws_fanout                       # embedded, 2,000 sockets
    .venv/bin/python -m benchmarks.ws_fanout --runtime services \\
        --database-url postgresql://root@127.0.0.1:5432/test --redis-url redis://127.0.0.1:6379/13

Starts Courier (``courier serve``; with ``--runtime services`` also relay, worker and
projections), makes a group conversation of N participants plus a sender, opens one
socket per participant on the one API process, and sends group messages one after
another. For each message it records, per subscriber, the time from the send (just
before the POST) to its ``message.new`` frame: p50, p99 and max, and the spread from
the first frame to the last. The API process's RSS is read from /proc before the
sockets, with them open, and after the messages. Prints a table and writes JSON.
With ``--across`` (services runtime), the sends go through a second API process: the
time a frame takes to cross API processes (docs/REALTIME.md).
A benchmark, not a test: no figure is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import uvloop

from benchmarks.ws_client import Listener, listen
from domain.percentiles import percentile

ROOT = Path(__file__).resolve().parents[1]
SECRET = "ws-fanout-benchmark-" + "x" * 40
SENDER = "lead"


@dataclass(frozen=True)
class Sample:
    message: int
    first_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    spread_ms: float
    received: int
    hub_p50_ms: float  # from each recipient's Delivered event to its frame
    hub_p99_ms: float
    delivered_span_ms: float  # from the send to the last Delivered event (the job pipeline)


def token(user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "tenant": "bench", "roles": ["user"], "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """`courier` processes with their output in files under ``workdir``."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.port = args.port
        self.workdir = workdir
        self.env = {
            **os.environ,
            "JWT_SECRET": SECRET,
            "COURIER_DATA_DIR": str(workdir / "var"),
            "COURIER_POLL_INTERVAL": "0.02",
            "WS_SEND_QUEUE": "256",
            "WS_IDLE_SECONDS": "3600",  # the benchmark's sockets only listen
            "RATE_LIMIT_PER_USER": "0",  # all its sockets come from one address
            "RATE_LIMIT_PER_ADDRESS": "0",
            "PYTHONUNBUFFERED": "1",
        }
        roles = ["serve"]
        self.schema: str | None = None
        self.database_url = ""
        if args.runtime == "services":
            import psycopg

            from infrastructure.crypto import generate_master_key_spec

            schema = "bench_ws_" + uuid.uuid4().hex[:8]
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            self.schema = schema
            self.database_url = args.database_url
            self.env.update(
                DATABASE_URL=args.database_url,
                POSTGRES_SCHEMA=schema,
                BROKER_URL=args.redis_url,
                REDIS_URL=args.redis_url,
                ENCRYPTION_MASTER_KEYS=generate_master_key_spec(),
            )
            roles += ["relay", "worker", "projections"]
        commands = {role: [role] for role in roles}
        commands["serve"] += ["--port", str(self.port)]
        if args.across:  # a second API process, which takes the sends
            commands["serve-b"] = ["serve", "--port", str(self.port + 1)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli", *command],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def delivered_at(self, message_id: str) -> dict[str, float]:
        """Each recipient's ``Delivered`` event time (wall clock), from the event store."""
        if self.schema is None:
            import sqlite3

            with sqlite3.connect(self.workdir / "var" / "courier.db") as db:
                rows = db.execute(
                    "SELECT state FROM stored_events WHERE originator_id = ?",
                    (uuid.UUID(message_id).hex,),
                ).fetchall()
            states = [bytes(r[0]) for r in rows]
        else:
            import psycopg

            with psycopg.connect(self.database_url, options=f"-csearch_path={self.schema}") as db:
                states = [
                    bytes(r[0])
                    for r in db.execute(
                        "SELECT state FROM messaging_events WHERE originator_id = %s",
                        (uuid.UUID(message_id),),
                    )
                ]
        out: dict[str, float] = {}
        for state in states:
            event = json.loads(state)
            if "online" in event and "offline" in event:
                at = datetime.fromisoformat(event["timestamp"]["_data_"]).timestamp()
                out.update(dict.fromkeys([*event["online"], *event["offline"]], at))
        return out

    @property
    def api_pid(self) -> int:
        return self.processes["serve"].pid

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.schema is not None:
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


async def wait_ready(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        for _ in range(600):
            try:
                if (await http.get("/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the API did not become ready")


class Arrivals:
    """How many subscribers got each message; wakes whoever waits for them all."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.changed = asyncio.Event()

    def add(self, mid: str) -> None:
        self.counts[mid] = self.counts.get(mid, 0) + 1
        self.changed.set()

    async def wait(self, mid: str, count: int, deadline: float) -> None:
        while self.counts.get(mid, 0) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


class Subscriber:
    # The client's own work per frame is kept small (a lean protocol, uvloop, orjson,
    # no polling of every subscriber): it shares the cores with the server it measures.
    def __init__(self, user: str, seen: Arrivals) -> None:
        self.user = user
        self.seen = seen
        self.arrivals: dict[str, tuple[float, float]] = {}  # id → (perf_counter, wall)
        self.ready = asyncio.Event()
        self.socket: Listener | None = None

    async def open(self, port: int) -> None:
        path = f"/ws?token={token(self.user)}"
        self.socket = await listen("127.0.0.1", port, path, self.on_text)

    def on_text(self, raw: bytes) -> None:
        at = (time.perf_counter(), time.time())
        frame = orjson.loads(raw)
        if frame["type"] == "ready":
            self.ready.set()
        elif frame["type"] == "message.new":
            mid = frame["message"]["id"]
            if mid not in self.arrivals:
                self.arrivals[mid] = at
                self.seen.add(mid)


async def open_all(port: int, subscribers: list[Subscriber], batch: int) -> None:
    for start in range(0, len(subscribers), batch):
        group = subscribers[start : start + batch]
        await asyncio.gather(*(sub.open(port) for sub in group))
        await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in group)), 120)


async def measure(args: argparse.Namespace, server: Server) -> dict[str, Any]:
    base = f"http://127.0.0.1:{server.port}"
    await wait_ready(base)
    if args.across:
        base = f"http://127.0.0.1:{server.port + 1}"
        await wait_ready(base)
    people = [f"u{i:05d}" for i in range(args.subscribers)]
    headers = {"Authorization": f"Bearer {token(SENDER)}"}
    async with httpx.AsyncClient(base_url=base, timeout=60, headers=headers) as http:
        created = await http.post(
            "/api/conversations",
            json={"type": "group", "participantIds": people, "title": "fan-out"},
        )
        created.raise_for_status()
        conversation = created.json()["id"]
        rss_before = rss_mib(server.api_pid)
        seen = Arrivals()
        subscribers = [Subscriber(user, seen) for user in people]
        opened = time.perf_counter()
        await open_all(server.port, subscribers, args.connect_batch)
        connect_seconds = time.perf_counter() - opened
        rss_connected = rss_mib(server.api_pid)
        samples: list[Sample] = []
        for n in range(args.warmup + args.messages):
            started, started_wall = time.perf_counter(), time.time()
            sent = await http.post(
                "/api/messages/group",
                json={"conversationId": conversation, "content": f"fan-out #{n} " + "x" * 200},
            )
            sent.raise_for_status()
            mid = sent.json()["message"]["id"]
            await seen.wait(mid, len(subscribers), time.monotonic() + args.timeout)
            if n < args.warmup:
                continue
            got = [s for s in subscribers if mid in s.arrivals]
            if not got:
                raise RuntimeError(f"no subscriber got message {n + 1} in {args.timeout} s")
            latencies = [(s.arrivals[mid][0] - started) * 1000 for s in got]
            delivered = await asyncio.to_thread(server.delivered_at, mid)
            hub = [(s.arrivals[mid][1] - delivered[s.user]) * 1000 for s in got]
            samples.append(
                Sample(
                    message=n - args.warmup + 1,
                    first_ms=min(latencies),
                    p50_ms=percentile(latencies, 0.50),
                    p99_ms=percentile(latencies, 0.99),
                    max_ms=max(latencies),
                    spread_ms=max(latencies) - min(latencies),
                    received=len(latencies),
                    hub_p50_ms=percentile(hub, 0.50),
                    hub_p99_ms=percentile(hub, 0.99),
                    delivered_span_ms=(max(delivered.values()) - started_wall) * 1000,
                )
            )
        rss_after = rss_mib(server.api_pid)
        await asyncio.gather(*(s.socket.close() for s in subscribers if s.socket is not None))
    return {
        "runtime": args.runtime,
        "subscribers": args.subscribers,
        "across": args.across,
        "messages": args.messages,
        "connectSeconds": round(connect_seconds, 2),
        "rssMiB": {
            "before": round(rss_before, 1),
            "connected": round(rss_connected, 1),
            "after": round(rss_after, 1),
            "perConnectionKiB": round((rss_connected - rss_before) * 1024 / args.subscribers, 1),
        },
        "samples": [asdict(s) for s in samples],
        "summary": {
            "p50Ms": round(statistics.median(s.p50_ms for s in samples), 1),
            "p99Ms": round(statistics.median(s.p99_ms for s in samples), 1),
            "maxMs": round(max(s.max_ms for s in samples), 1),
            "firstMs": round(statistics.median(s.first_ms for s in samples), 1),
            "spreadMs": round(statistics.median(s.spread_ms for s in samples), 1),
            "hubP50Ms": round(statistics.median(s.hub_p50_ms for s in samples), 1),
            "hubP99Ms": round(statistics.median(s.hub_p99_ms for s in samples), 1),
            "lastDeliveredMs": round(statistics.median(s.delivered_span_ms for s in samples), 1),
            "allReceived": all(s.received == args.subscribers for s in samples),
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }


def print_report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['subscribers']} subscribers on one API process ({result['runtime']}"
        f"{', sends through another' if result['across'] else ''}), "
        f"opened in {result['connectSeconds']} s"
    )
    print("          send → frame                       Delivered → frame   send → last")
    head = ("msg", "first", "p50", "p99", "max", "hub p50", "hub p99", "Delivered", "got")
    print("{:>4} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>6}".format(*head))
    for s in result["samples"]:
        print(
            f"{s['message']:>4} {s['first_ms']:>6.0f}ms {s['p50_ms']:>6.0f}ms "
            f"{s['p99_ms']:>6.0f}ms {s['max_ms']:>6.0f}ms {s['hub_p50_ms']:>7.0f}ms "
            f"{s['hub_p99_ms']:>7.0f}ms {s['delivered_span_ms']:>8.0f}ms {s['received']:>6}"
        )
    summary, rss = result["summary"], result["rssMiB"]
    print(
        f"median over messages: p50 {summary['p50Ms']} ms, p99 {summary['p99Ms']} ms "
        f"(first frame {summary['firstMs']} ms, first→last {summary['spreadMs']} ms)"
    )
    print(
        f"of which the hub (Delivered stored → frame): p50 {summary['hubP50Ms']} ms, "
        f"p99 {summary['hubP99Ms']} ms; last Delivered {summary['lastDeliveredMs']} ms after send"
    )
    print(
        f"API RSS: {rss['before']} MiB before, {rss['connected']} MiB with the sockets "
        f"(~{rss['perConnectionKiB']} KiB each), {rss['after']} MiB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--messages", type=int, default=5, help="measured group messages")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runtime", choices=["embedded", "services"], default="embedded")
    parser.add_argument("--database-url", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--connect-batch", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per message")
    parser.add_argument(
        "--across",
        action="store_true",
        help="services: send through a second API process (the sockets stay on the first)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/ws_fanout.json"))
    args = parser.parse_args()
    if args.across and args.runtime != "services":
        parser.error("--across needs --runtime services")
    workdir = Path(tempfile.mkdtemp(prefix="courier-ws-fanout-"))
    if os.environ.get("KEEP_LOGS") == "1":
        print(f"server logs in {workdir}")
    server = Server(args, workdir)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(measure(args, server))
    finally:
        server.stop()
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")
    if os.environ.get("KEEP_LOGS") != "1":
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
