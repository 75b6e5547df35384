"""Soak: hold an open-loop rate for many minutes with WebSocket subscribers connected.

    .venv/bin/python -m benchmarks.soak                    # 15 min at half the measured max
    .venv/bin/python -m benchmarks.soak --minutes 2 --rate 10
    .venv/bin/python -m benchmarks.soak --max-rate 120     # 15 min at 60 msg/s

Starts the services runtime (``benchmarks.runtime.ServicesRuntime``: serve, relay,
worker, projections on a fresh schema), populates W1's users and groups, connects the
WebSocket subscribers (spread over W1's users; each reconnects with ``since`` if its
socket closes), then finds the maximum acceptance rate with a short closed loop (unless
``--max-rate`` or ``--rate`` is given) and offers half of it, open loop (``load.open_loop``:
latency from the scheduled send, no coordinated omission), minute after minute. Each
minute reports its p50/p99, errors, the frames the subscribers got and every process's
RSS; the run reports RSS growth per process from the first minute to the last and waits
until every accepted message is delivered, notified and indexed. A benchmark, not a
test: nothing is asserted. JSON goes to ``--out`` (``soak-latest.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from benchmarks import lifecycle, machine, w1
from benchmarks.defaults import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL
from benchmarks.load import Call, LoadResult, client_for, closed_loop, open_loop
from benchmarks.runtime import ServicesRuntime, proc_status

OPEN_LOOP_CONNECTIONS = 256
APP_PING_SECONDS = 30.0  # below WS_IDLE_SECONDS (120 s by default)


@dataclass(frozen=True)
class SoakConfig:
    minutes: float = 15.0
    rate: float | None = None  # offered msg/s; default: half of max_rate
    max_rate: float | None = None  # default: measured with a closed loop
    probe_seconds: float = 20.0
    probe_clients: int = 50
    subscribers: int = 100
    users: int = 40
    groups: int = 10
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None
    out: Path = Path("docs/benchmarks")
    settle_timeout: float = 900.0
    env: dict[str, str] = field(default_factory=dict)


class Subscriber:
    """One socket for the whole run; it reconnects with ``since`` if the server closes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames = 0
        self.seen: set[str] = set()
        self.duplicates = 0
        self.closes: list[str] = []
        self.cursor: str | None = None
        self.ready = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            url = self.url + (f"&since={self.cursor}" if self.cursor else "")
            try:
                async with connect(url, open_timeout=60, max_queue=None) as ws:
                    pinger = asyncio.ensure_future(self._ping(ws))
                    try:
                        await self._read(ws, stopping)
                    finally:
                        pinger.cancel()
            except Exception as error:
                if stopping.is_set():
                    return
                self.closes.append(type(error).__name__)
                await asyncio.sleep(1.0)

    async def _read(self, ws: Any, stopping: asyncio.Event) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "ready":
                self.cursor = frame["cursor"]
                self.ready.set()
            elif frame.get("type") == "message.new":
                self.cursor = frame["cursor"]
                self.frames += 1
                mid = frame["message"]["id"]
                if mid in self.seen:
                    self.duplicates += 1
                self.seen.add(mid)
            if stopping.is_set():
                return
        if not stopping.is_set():
            self.closes.append(f"closed {ws.close_code}")

    async def _ping(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(APP_PING_SECONDS)
            await ws.send(json.dumps({"type": "ping"}))


def rss_mb(pids: dict[str, int]) -> dict[str, float | None]:
    return {role: machine.mb(proc_status(pid, "VmRSS")) for role, pid in pids.items()}


def growth(start: dict[str, float | None], end: dict[str, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role, before in start.items():
        after = end.get(role)
        pct = round(100 * (after - before) / before, 1) if before and after else None
        out[role] = {"startMb": before, "endMb": after, "growthPct": pct}
    return out


def minute_figures(n: int, offered: float, load: LoadResult) -> dict[str, Any]:
    summary = load.summary()
    return {
        "minute": n,
        "offeredPerS": offered,
        **{k: summary[k] for k in ("requests", "ok", "errors", "statuses", "p50Ms", "p99Ms")},
        "maxMs": summary["maxMs"],
    }


class Soak:
    def __init__(self, config: SoakConfig, runtime: ServicesRuntime) -> None:
        self.config = config
        self.runtime = runtime
        self.workload = w1.Workload(users=config.users, groups=config.groups)
        self.sent = 0  # numbering of the W1 contents across phases
        self.accepted = 0

    def calls(self, count: int, seed: int, population: w1.Population) -> list[Call]:
        planned = w1.plan(self.workload, count, seed_offset=seed)
        calls = w1.calls(planned, population, first=self.sent)
        self.sent += count
        return calls

    async def run(self) -> dict[str, Any]:
        config, runtime = self.config, self.runtime
        result: dict[str, Any] = {}
        async with client_for(runtime.base_url, OPEN_LOOP_CONNECTIONS) as client:
            population = await w1.populate(client, self.workload, runtime.jwt_secret)
            stopping = asyncio.Event()
            subscribers = [
                Subscriber(
                    f"ws://127.0.0.1:{runtime.port}/ws?token="
                    + population.tokens[population.users[i % len(population.users)]]
                )
                for i in range(config.subscribers)
            ]
            readers = [asyncio.ensure_future(s.run(stopping)) for s in subscribers]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in subscribers)), 120)
            rate, result["maxRate"] = await self._rate(client, population)
            print(f"soak: {rate:g} msg/s for {config.minutes:g} min, {len(subscribers)} sockets")
            result["offeredPerS"] = rate
            pids = runtime.pids()
            result["rssAtStart"] = start_rss = rss_mb(pids)
            result["minutes"] = await self._minutes(client, population, rate, subscribers, pids)
            end_rss = rss_mb(pids)
            result["rss"] = growth(start_rss, end_rss)
            # From the end of the first minute: growth once caches and pools are warm.
            result["rssAfterFirstMinute"] = growth(result["minutes"][0]["rssMb"], end_rss)
            stopping.set()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        with runtime.connect() as conn:
            settled, _ = await asyncio.to_thread(
                lifecycle.wait_settled, conn, self.accepted, config.settle_timeout
            )
        p99s = [m["p99Ms"] for m in result["minutes"] if m["p99Ms"] is not None]
        result["totals"] = {
            "requests": sum(m["requests"] for m in result["minutes"]),
            "ok": sum(m["ok"] for m in result["minutes"]),
            "errors": sum(m["errors"] for m in result["minutes"]),
            "accepted": self.accepted,
            "done": settled.done,
            "failed": settled.failed,
            "allTerminal": settled.done == self.accepted,
            "p99MsMinuteMin": min(p99s) if p99s else None,
            "p99MsMinuteMax": max(p99s) if p99s else None,
            "wsFrames": sum(s.frames for s in subscribers),
            "wsDuplicates": sum(s.duplicates for s in subscribers),
            "wsReconnects": sum(len(s.closes) for s in subscribers),
            "wsCloseReasons": sorted({c for s in subscribers for c in s.closes}),
        }
        return result

    async def _rate(
        self, client: Any, population: w1.Population
    ) -> tuple[float, dict[str, Any] | None]:
        """The offered rate, and how the maximum was found (None when the rate was given)."""
        config = self.config
        if config.rate is not None:
            return config.rate, None
        if config.max_rate is not None:
            return config.max_rate / 2, {"given": config.max_rate}
        count = max(1000, int(config.probe_seconds * 200))
        calls = self.calls(count, 1, population)
        probe = await closed_loop(client, calls, config.probe_clients, seconds=config.probe_seconds)
        self.accepted += probe.ok
        measured = probe.summary()["throughputPerS"]
        print(f"max acceptance (closed loop, {config.probe_clients} clients): {measured} msg/s")
        with self.runtime.connect() as conn:  # start the soak from a drained pipeline
            await asyncio.to_thread(
                lifecycle.wait_settled, conn, self.accepted, config.settle_timeout
            )
        return max(1.0, round(measured / 2, 1)), {"measured": probe.summary()}

    async def _minutes(
        self,
        client: Any,
        population: w1.Population,
        rate: float,
        subscribers: list[Subscriber],
        pids: dict[str, int],
    ) -> list[dict[str, Any]]:
        """One open loop per minute, each starting on the minute whatever the last does."""
        total = self.config.minutes * 60
        started = time.monotonic()

        async def minute(n: int) -> dict[str, Any]:
            seconds = min(60.0, total - 60 * n)
            calls = self.calls(max(1, round(rate * seconds)), 100 + n, population)
            await asyncio.sleep(max(0.0, started + 60 * n - time.monotonic()))
            frames_before = sum(s.frames for s in subscribers)
            load = await open_loop(client, calls, rate)
            self.accepted += load.ok
            figures = minute_figures(n + 1, rate, load)
            figures["wsFramesDuringMinute"] = sum(s.frames for s in subscribers) - frames_before
            figures["rssMb"] = rss_mb(pids)
            figures["loadAverage"] = machine.loadavg()[0]
            print(
                f"minute {n + 1}: {figures['ok']}/{figures['requests']} ok, "
                f"p50 {figures['p50Ms']} ms, p99 {figures['p99Ms']} ms, "
                f"{figures['wsFramesDuringMinute']} frames, rss {figures['rssMb']}"
            )
            return figures

        count = math.ceil(total / 60)
        return list(await asyncio.gather(*(minute(n) for n in range(count))))


def run(config: SoakConfig) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="courier-soak-"))
    redis_url = config.redis_url or (
        config.broker_url if config.broker_url.startswith("redis") else DEFAULT_BROKER_URL
    )
    runtime = ServicesRuntime(
        config.database_url, config.broker_url, redis_url, log_dir, dict(config.env)
    )
    command = "python -m benchmarks.soak " + " ".join(sys.argv[1:])
    result: dict[str, Any] = {"meta": machine.meta(command.strip()), "config": _config(config)}
    print(f"logs in {log_dir}; schema {runtime.schema}")
    failed = True
    try:
        runtime.start()
        result.update(asyncio.run(Soak(config, runtime).run()))
        runtime.check_alive()
        result["meta"]["loadAverageEnd"] = machine.loadavg()
        failed = False
    finally:
        runtime.stop()
        if not failed:
            shutil.rmtree(log_dir, ignore_errors=True)
    config.out.mkdir(parents=True, exist_ok=True)
    path = config.out / "soak-latest.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_summary(result)
    print(f"wrote {path}")
    return result


def print_summary(result: dict[str, Any]) -> None:
    totals = result["totals"]
    print(
        f"{totals['ok']}/{totals['requests']} accepted, {totals['errors']} errors; "
        f"{totals['done']}/{totals['accepted']} delivered+notified+indexed (probe included); "
        f"p99 per minute {totals['p99MsMinuteMin']} to {totals['p99MsMinuteMax']} ms; "
        f"{totals['wsFrames']} frames ({totals['wsDuplicates']} repeated, "
        f"{totals['wsReconnects']} reconnects)"
    )
    warm = result["rssAfterFirstMinute"]
    for role, figures in result["rss"].items():
        print(
            f"  {role}: RSS {figures['startMb']} → {figures['endMb']} MB "
            f"({figures['growthPct']}%; {warm[role]['growthPct']}% after the first minute)"
        )


def _config(config: SoakConfig) -> dict[str, Any]:
    values = asdict(config)
    values["out"] = str(config.out)
    for key in ("database_url", "broker_url", "redis_url"):
        if values.get(key):
            values[key] = machine.redact(values[key])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=None, help="offered msg/s (skips the probe)")
    parser.add_argument("--max-rate", type=float, default=None, help="offer half of this")
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--broker-url", default=DEFAULT_BROKER_URL, help="its database is FLUSHED before and after"
    )
    parser.add_argument("--redis-url", default=None, help="default: the broker URL")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="K=V")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.settings)
    run(
        SoakConfig(
            minutes=args.minutes,
            rate=args.rate,
            max_rate=args.max_rate,
            probe_seconds=args.probe_seconds,
            subscribers=args.subscribers,
            database_url=args.database_url,
            broker_url=args.broker_url,
            redis_url=args.redis_url,
            out=args.out,
            settle_timeout=args.settle_timeout,
            env=env,
        )
    )


if __name__ == "__main__":
    main()
