"""`courier serve`, `worker`, `relay`, `projections`: the long-running processes."""

from __future__ import annotations

import click

from application.jobs import QUEUES
from interfaces.cli.common import load_settings, run_until_signalled, setup_logging


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--access-log/--no-access-log",
    default=False,
    envvar="HTTP_ACCESS_LOG",
    show_default=True,
    help="Log one line per request (tokens redacted). Env: HTTP_ACCESS_LOG=1.",
)
def serve(host: str, port: int, access_log: bool) -> None:
    """Run the HTTP API and WebSocket server.

    On the embedded default this one process also runs the relay, the workers and
    the projections. Pending migrations are applied on start.
    """
    from interfaces.server import run

    setup_logging()
    run(load_settings(), host, port, access_log=access_log)


@click.command()
@click.option(
    "--queues",
    default="",
    metavar="NAME,NAME",
    help=f"Consume only these queues (comma-separated; default all: {', '.join(QUEUES)}).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Broker messages each of its queues holds at once (default: QUEUE_<NAME>_CONCURRENCY).",
)
def worker(queues: str, concurrency: int | None) -> None:
    """Run the workers (services runtime): all six queues, or those of --queues."""
    names = [q.strip().upper() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown:
        raise click.BadParameter(
            f"unknown queue {', '.join(unknown)}; choose from {', '.join(QUEUES)}",
            param_hint="--queues",
        )
    run_until_signalled("worker", worker_queues=names or None, worker_concurrency=concurrency)


@click.command()
def relay() -> None:
    """Run the relay: follows the event log and publishes jobs (one leads at a time)."""
    run_until_signalled("relay")


@click.command()
def projections() -> None:
    """Run the projections that keep the read tables up to date."""
    run_until_signalled("projections")
