"""`courier bench`: the click command (registered on the `courier` group).

Only click is imported here; the harness loads when the command runs.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from benchmarks.defaults import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL


def _rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter("comma-separated numbers, e.g. 250,500,1000") from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter("at least one rate, every one above 0")
    return values


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        env[key] = value
    return env


@click.command()
@click.option("--messages", default=10_000, show_default=True, help="W1 messages (closed loop).")
@click.option(
    "--clients",
    default=50,
    show_default=True,
    help="Concurrent HTTP connections (W1 closed loop, Starlette floor).",
)
@click.option(
    "--rates", default="250,500,1000", show_default=True, help="Open-loop offered rates, msg/s."
)
@click.option(
    "--open-loop-seconds", default=4.0, show_default=True, help="Length of each open-loop step."
)
@click.option("--skip-open-loop", is_flag=True, help="Closed loop only.")
@click.option("--quick", is_flag=True, help="Smoke size: 500 messages, one small open loop.")
@click.option(
    "--out",
    default="docs/benchmarks",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where latest.json, latest.md and latest.png go.",
)
@click.option("--database-url", default=DEFAULT_DATABASE_URL, show_default=True)
@click.option(
    "--broker-url",
    default=DEFAULT_BROKER_URL,
    show_default=True,
    help="Its database is FLUSHED before and after: give the benchmark one of its own.",
)
@click.option("--redis-url", default=None, help="Default: the broker URL when it is Redis.")
@click.option(
    "--lifecycle-timeout", default=900.0, show_default=True, help="Seconds to wait for done."
)
@click.option(
    "--floor-seconds",
    default=5.0,
    show_default=True,
    help="Length of the PostgreSQL and Starlette floors (kombu: at most 3x).",
)
@click.option("--profile", is_flag=True, help="Sample every server process with py-spy in W1.")
@click.option("--keep", is_flag=True, help="Keep the run's schema and Redis data afterwards.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Env for the servers.")
def bench(
    messages: int,
    clients: int,
    rates: str,
    open_loop_seconds: float,
    skip_open_loop: bool,
    quick: bool,
    out: Path,
    database_url: str,
    broker_url: str,
    redis_url: str | None,
    lifecycle_timeout: float,
    floor_seconds: float,
    profile: bool,
    keep: bool,
    settings: tuple[str, ...],
) -> None:
    """Run workload W1 against a services runtime of its own, and the floors.

    Starts `courier serve | relay | worker | projections` on a fresh PostgreSQL schema,
    sends W1 (80% direct, 20% to groups of 20, half encrypted, notify and index on)
    from concurrent connections, waits until every message is delivered, notified and
    indexed, then sends it open loop at each offered rate (latency from the scheduled
    send), then measures the floors on the same machine: one-row insert transactions,
    kombu publish + consume, a bare Starlette endpoint, reading the notification log.
    The load generator (asyncio + httptools on uvloop, requests encoded beforehand)
    reports its own CPU per request beside each figure. Prints a table and writes JSON,
    Markdown and a PNG chart (docs/PERFORMANCE.md).
    """
    from benchmarks.bench import BenchConfig, run

    if messages < 1 or clients < 1:
        raise click.BadParameter("--messages and --clients must be at least 1")
    config = BenchConfig(
        messages=messages,
        clients=clients,
        rates=_rates(rates),
        open_loop_seconds=open_loop_seconds,
        open_loop=not skip_open_loop,
        database_url=database_url,
        broker_url=broker_url,
        redis_url=redis_url,
        out=out,
        lifecycle_timeout=lifecycle_timeout,
        floor_seconds=floor_seconds,
        profile=profile,
        keep=keep,
        env=_pairs(settings),
        command="courier " + shlex.join(sys.argv[1:]),
    )
    if quick:
        config = config.quick()
    result = run(config)
    if not result["w1"]["lifecycle"]["allTerminal"]:
        raise SystemExit("not every message reached its terminal state before the deadline")
