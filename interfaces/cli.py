"""The `courier` command (SPEC §7)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

import click

from infrastructure.settings import SettingsError, load

ROLES_HELP = "comma-separated subset of user, auditor, admin"


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings() -> Any:
    try:
        return load()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _run_until_signalled(role: str) -> None:
    from infrastructure.bootstrap import build

    _setup_logging()
    container = build(_settings(), role)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    container.start()
    stop.wait()
    logging.getLogger("courier").info("courier %s stopping", role)
    container.stop()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Courier: secure messaging for healthcare teams.

    With nothing configured, every command uses the embedded default (SQLite and an
    in-process broker under ./var/). Set DATABASE_URL, BROKER_URL and REDIS_URL to
    run the services runtime; see .env.example.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the HTTP API and WebSocket server.

    On the embedded default this one process also runs the relay, the workers and
    the projections. Pending migrations are applied on start.
    """
    from interfaces.server import run

    _setup_logging()
    run(_settings(), host, port)


@main.command()
def worker() -> None:
    """Run the workers of all six queues (services runtime)."""
    _run_until_signalled("worker")


@main.command()
def relay() -> None:
    """Run the relay: follows the event log and publishes jobs (one leads at a time)."""
    _run_until_signalled("relay")


@main.command()
def projections() -> None:
    """Run the projections that keep the read tables up to date."""
    _run_until_signalled("projections")


@main.command()
@click.argument("direction", type=click.Choice(["up", "down"]), default="up")
@click.argument("revision", required=False)
def migrate(direction: str, revision: str | None) -> None:
    """Apply (up [REV], default head) or revert (down REV) read-side migrations."""
    from infrastructure import migrate as migrations

    settings = _settings()
    url = settings.sqlalchemy_url()
    schema = settings.extra.get("POSTGRES_SCHEMA")
    if direction == "up":
        migrations.upgrade(url, revision or "head", schema=schema)
    else:
        if not revision:
            raise click.UsageError("`courier migrate down` needs a revision, e.g. `base` or `-1`")
        migrations.downgrade(url, revision, schema=schema)
    click.echo(f"read side at revision {migrations.current(url, schema=schema) or 'base'}")


@main.command()
@click.option("--user", "user", required=True, help="User id (the token's `sub`).")
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--roles", default="user", show_default=True, help=ROLES_HELP)
@click.option("--ttl", default=3600, show_default=True, type=int, help="Seconds until it expires.")
def token(user: str, tenant: str, roles: str, ttl: int) -> None:
    """Print a signed development token (and nothing else) to stdout."""
    from interfaces.http.auth import mint_token

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ("user", "auditor", "admin")]
    if unknown:
        raise click.BadParameter(f"unknown role(s): {', '.join(unknown)}", param_hint="--roles")
    click.echo(mint_token(_settings(), user, tenant, wanted, ttl))


@main.group()
def keys() -> None:
    """Service master keys."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new ENCRYPTION_MASTER_KEYS entry (prepend it to rotate)."""
    from infrastructure.crypto import generate_master_key_spec

    click.echo(generate_master_key_spec())


@main.command()
@click.argument("projection", type=click.Choice(["messages"]))
def replay(projection: str) -> None:
    """Rebuild a projection from the event log, with progress."""
    from interfaces.replay import replay_projection

    _setup_logging()
    replay_projection(_settings(), projection)


if __name__ == "__main__":
    main()
