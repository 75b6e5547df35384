"""One benchmark run: start a services runtime, drive W1, measure the floors, report."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import figures, floors, lifecycle, load, machine, report, w1
from benchmarks.defaults import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL
from benchmarks.load import (
    OPEN_LOOP_CONNECTIONS,
    Call,
    LoadResult,
    client_for,
    closed_loop,
    open_loop,
)
from benchmarks.profile import Profiles
from benchmarks.runtime import ServicesRuntime, proc_status
from benchmarks.stats import rate


@dataclass(frozen=True)
class BenchConfig:
    messages: int = 10_000
    clients: int = 50
    rates: tuple[float, ...] = (250.0, 500.0, 1000.0)
    open_loop_seconds: float = 4.0
    open_loop: bool = True
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None  # default: the broker's URL when it is Redis
    out: Path = Path("docs/benchmarks")
    lifecycle_timeout: float = 900.0
    floor_seconds: float = 5.0
    floor_messages: int = 10_000
    floor_requests: int = 10_000  # W1-shaped bodies, sent over and over for floor_seconds
    users: int = 40
    groups: int = 10
    profile: bool = False
    keep: bool = False
    bracket: bool = True  # measure the floors before W1 as well as after it
    env: dict[str, str] = field(default_factory=dict)
    command: str = "courier bench"

    def quick(self) -> BenchConfig:
        """The smoke-test size: every phase runs, none of the figures mean much."""
        return replace(
            self,
            messages=500,
            rates=(100.0,),
            open_loop_seconds=1.0,
            floor_seconds=1.0,
            floor_messages=500,
            floor_requests=500,
            lifecycle_timeout=min(self.lifecycle_timeout, 120.0),
            bracket=False,
        )

    def redis(self) -> str:
        if self.redis_url:
            return self.redis_url
        return self.broker_url if self.broker_url.startswith("redis") else DEFAULT_BROKER_URL


def run(config: BenchConfig, console: Console | None = None) -> dict[str, Any]:
    """Run everything once; write the report into ``config.out`` and return it."""
    console = console or Console()
    log_dir = Path(tempfile.mkdtemp(prefix="courier-bench-"))
    result: dict[str, Any] = {"meta": machine.meta(config.command), "config": _config(config)}
    result["meta"]["loadGenerator"] = load.GENERATOR
    runtime = ServicesRuntime(
        config.database_url, config.broker_url, config.redis(), log_dir, dict(config.env)
    )
    console.log(f"logs in {log_dir}; schema {runtime.schema}")
    try:
        runtime.prepare()
        before = _floors(config, runtime, console, log_dir, "before W1") if config.bracket else None
        with console.status("starting courier serve, relay, worker, projections…"):
            runtime.start()
        console.log(f"services runtime up on {runtime.base_url} (pids {runtime.pids()})")
        result["w1"] = _w1(config, runtime, console, log_dir)
        result["processes"] = {
            role: {"pid": pid, "peakRssMb": machine.mb(proc_status(pid, "VmHWM"))}
            for role, pid in runtime.pids().items()
        }
        result["processes"]["bench"] = {
            "pid": os.getpid(),
            "peakRssMb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        runtime.check_alive()
        runtime.stop(drop=False)
        after = _floors(config, runtime, console, log_dir, "after W1")
        result["floors"] = figures.merge_floors([run for run in (before, after) if run is not None])
        with console.status("floor: read + decode the notification log…"):
            result["floors"]["notificationLog"], events = floors.notification_log(runtime.env())
        with console.status("time to each stage, from the decoded log…"):
            result["w1"]["lifecycle"]["stages"] = lifecycle.stage_latencies(
                events, result["w1"].pop("_ids")
            )
        result["ratios"] = figures.ratios(result)
        result["meta"]["loadAverageEnd"] = machine.loadavg()
        keep_logs = config.keep or config.profile
        result["meta"]["logs"] = str(log_dir) if keep_logs else None
    finally:
        runtime.stop(drop=not config.keep)
    if not keep_logs:  # a run that failed keeps them: the error names the folder
        shutil.rmtree(log_dir, ignore_errors=True)
    written = report.write(result, config.out)
    report.table(result, console)
    for line in written:
        console.log(line)
    return result


def _w1(
    config: BenchConfig, runtime: ServicesRuntime, console: Console, log_dir: Path
) -> dict[str, Any]:
    workload = w1.Workload(messages=config.messages, users=config.users, groups=config.groups)
    population = asyncio.run(_populate(runtime.base_url, workload, runtime.jwt_secret))
    console.log(
        f"{len(population.users)} users with RSA-4096 keys, {len(population.groups)} groups"
    )
    calls = w1.calls(w1.plan(workload, workload.messages), population)
    out: dict[str, Any] = {"workload": asdict(workload), "clients": config.clients}
    with runtime.connect() as conn:
        first = lifecycle.log_position(conn)
        profiles = Profiles(runtime.pids(), log_dir / "profiles") if config.profile else None
        before = machine.Snapshot.take(runtime.pids())
        ids: list[str] = []
        closed = _closed(runtime.base_url, calls, config.clients, ids, console)
        console.log(
            f"W1 closed loop: {closed.ok:,} accepted at {rate(closed.ok, closed.wall):,} msg/s "
            f"(load generator {1000 * closed.cpu / max(1, closed.sent):.3f} ms CPU per request)"
        )
        accepted = machine.Snapshot.take(runtime.pids())
        settled, done_at = _settle(conn, len(ids), config.lifecycle_timeout, console, "W1")
        after = machine.Snapshot.take(runtime.pids())
        if profiles is not None:
            out["profile"] = (
                profiles.stop() if profiles.available else {"error": "py-spy not found"}
            )
        last = lifecycle.log_position(conn)
        wall = done_at - before.at
        events = lifecycle.events_between(conn, first, last)
        jobs = lifecycle.jobs_between(conn, before.at, done_at)
        out["acceptance"] = closed.summary()
        out["lifecycle"] = {
            "accepted": len(ids),
            "done": settled.done,
            "failed": settled.failed,
            "allTerminal": settled.done == len(ids),
            "wallS": round(wall, 3),
            "throughputPerS": rate(settled.done, wall),
            "timeToTerminal": lifecycle.time_to_terminal(conn, ids),
        }
        out["events"] = {
            "count": events,
            "perS": rate(events, wall),
            "perMessage": _per(events, len(ids)),
        }
        total_jobs = sum(jobs.values())
        out["jobs"] = {
            "count": total_jobs,
            "perS": rate(total_jobs, wall),
            "perMessage": _per(total_jobs, len(ids)),
            "byQueue": jobs,
            "runTimeByQueue": lifecycle.job_durations(conn, before.at, done_at),
        }
        out["cpu"] = {
            "sending": accepted.since(before),
            "draining": after.since(accepted),
            "whole": after.since(before),
        }
        out["cpu"]["msPerMessage"] = {
            role: round(1000 * used["cpuS"] / len(ids), 2) if ids else None
            for role, used in out["cpu"]["whole"]["processes"].items()
        }
        out["_ids"] = ids
        if config.open_loop:
            out["openLoop"] = _open_loops(
                config, runtime, workload, population, conn, console, len(ids)
            )
        out["jobOutcomes"] = lifecycle.job_outcomes(conn)
    return out


async def _populate(base_url: str, workload: w1.Workload, secret: str) -> w1.Population:
    async with client_for(base_url, 20) as client:
        return await w1.populate(client, workload, secret)


def _closed(
    base_url: str, calls: list[Call], clients: int, ids: list[str], console: Console
) -> LoadResult:
    with _progress(console) as progress:
        task = progress.add_task(f"W1 closed loop, {clients} clients", total=len(calls))

        def accepted(_index: int, _status: int, body: bytes) -> None:
            ids.append(orjson.loads(body)["message"]["id"])
            progress.advance(task)

        return load.run(closed_loop(base_url, calls, clients, accepted))


def _settle(
    conn: Any, expected: int, timeout: float, console: Console, what: str
) -> tuple[lifecycle.Tally, float]:
    with _progress(console) as progress:
        task = progress.add_task(f"{what}: delivered + notified + indexed", total=expected)

        def show(t: lifecycle.Tally) -> None:
            progress.update(task, completed=min(t.done + t.failed, expected))

        return lifecycle.wait_settled(conn, expected, timeout, show)


def _open_loops(
    config: BenchConfig,
    runtime: ServicesRuntime,
    workload: w1.Workload,
    population: w1.Population,
    conn: Any,
    console: Console,
    accepted_before: int,
) -> list[dict[str, Any]]:
    results = []
    expected = accepted_before
    sent = workload.messages
    for step, offered in enumerate(config.rates, start=1):
        count = max(1, int(offered * config.open_loop_seconds))
        calls = w1.calls(w1.plan(workload, count, seed_offset=step), population, first=sent)
        sent += count
        started = time.time()
        with console.status(f"open loop: {count} messages offered at {offered:g}/s…"):
            step_load = load.run(
                open_loop(runtime.base_url, calls, offered, None, OPEN_LOOP_CONNECTIONS)
            )
        expected += step_load.ok
        settled, done_at = _settle(
            conn, expected, config.lifecycle_timeout, console, f"open {offered:g}/s"
        )
        results.append(
            {
                "offeredPerS": offered,
                "achievedSendPerS": rate(step_load.sent, step_load.send_wall),
                **step_load.summary(),
                "lifecycleWallS": round(done_at - started, 3),
                "lifecyclePerS": rate(step_load.ok, done_at - started),
                "allTerminal": settled.done == expected,
            }
        )
        runtime.check_alive()
    return results


def _floors(
    config: BenchConfig, runtime: ServicesRuntime, console: Console, log_dir: Path, when: str
) -> dict[str, Any]:
    """PostgreSQL, kombu and Starlette floors (measured before and after W1)."""
    result: dict[str, Any] = {}
    with console.status(f"floor {when}: PostgreSQL one-row insert transactions, 8 clients…"):
        result["postgresInsert"] = floors.postgres_inserts(
            config.database_url, runtime.schema, config.floor_seconds
        )
    with console.status(f"floor {when}: kombu publish, then consume + ack…"):
        result["kombu"] = floors.kombu_roundtrip(
            config.broker_url, config.floor_messages, 3 * config.floor_seconds
        )
    with console.status(f"floor {when}: bare Starlette endpoint…"):
        result["starlette"] = floors.starlette_requests(
            _floor_calls(config), config.clients, log_dir, config.floor_seconds
        )
    console.log(
        f"floors {when}: {result['postgresInsert']['txPerS']:,.0f} insert tx/s, "
        f"{result['kombu']['roundTripPerS']:,.0f} kombu jobs/s, "
        f"{result['starlette']['throughputPerS']:,.0f} Starlette req/s "
        f"(load generator {result['starlette']['generatorCpuMsPerRequest']} ms CPU per request)"
    )
    return result


def _floor_calls(config: BenchConfig) -> list[Call]:
    """W1-shaped requests for the bare endpoint (it checks no token and no id)."""
    workload = w1.Workload(messages=config.floor_requests, users=config.users, groups=config.groups)
    users = [f"clinician-{i:03d}" for i in range(workload.users)]
    secret = "floor-" + "x" * 42
    population = w1.Population(
        workload.tenant, users, {u: w1.mint(secret, u, "bench") for u in users}
    )
    population.groups = [(str(uuid.uuid4()), users[:20]) for _ in range(workload.groups)]
    return w1.calls(w1.plan(workload, workload.messages), population)


def _per(count: int, messages: int) -> float | None:
    return round(count / messages, 2) if messages else None


def _config(config: BenchConfig) -> dict[str, Any]:
    values = asdict(config)
    values["out"] = str(config.out)
    values["rates"] = list(config.rates)
    values["redisUrl"] = config.redis()
    for key in ("database_url", "broker_url", "redis_url", "redisUrl"):
        if values.get(key):
            values[key] = machine.redact(values[key])
    return values


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
