"""The `courier` command (docs/API.md §11)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any
from uuid import UUID

import click

from application.jobs import QUEUES
from benchmarks.command import bench as bench_command
from infrastructure.settings import SettingsError

ROLES_HELP = "comma-separated subset of user, auditor, admin"


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _settings() -> Any:
    from infrastructure.bootstrap import load_settings

    try:
        return load_settings()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def _run_until_signalled(role: str, **options: Any) -> None:
    from infrastructure.bootstrap import build

    _setup_logging()
    settings = _settings()
    if settings.background_nice:
        # On a host shared with the API, the background roles take the CPU it leaves:
        # a burst of sends is answered first and worked off right after.
        os.nice(settings.background_nice)
    container = build(settings, role, **options)
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

    _setup_logging()
    run(_settings(), host, port, access_log=access_log)


@main.command()
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
    _run_until_signalled("worker", worker_queues=names or None, worker_concurrency=concurrency)


@main.command()
def relay() -> None:
    """Run the relay: follows the event log and publishes jobs (one leads at a time)."""
    _run_until_signalled("relay")


@main.command()
def projections() -> None:
    """Run the projections that keep the read tables up to date."""
    _run_until_signalled("projections")


@main.command(context_settings={"ignore_unknown_options": True})  # `down -1` is a revision
@click.argument("direction", type=click.Choice(["up", "down"]), default="up")
@click.argument("revision", required=False)
@click.option(
    "--destroy-keys",
    is_flag=True,
    help="Let `down` revert the revision that creates key_vault: every message's content "
    "key is destroyed.",
)
def migrate(direction: str, revision: str | None, destroy_keys: bool) -> None:
    """Apply (up [REV], default head) or revert (down REV) read-side migrations.

    `down` refuses to drop the key vault (below revision 0001) without --destroy-keys.
    """
    from alembic.util import CommandError

    from infrastructure import migrate as migrations

    settings = _settings()
    url = settings.sqlalchemy_url()
    schema = settings.postgres_schema
    role = settings.database_app_role
    if direction == "up":
        migrations.upgrade(url, revision or "head", schema=schema, app_role=role)
    else:
        if not revision:
            raise click.UsageError("`courier migrate down` needs a revision, e.g. `base` or `-1`")
        try:
            migrations.downgrade(
                url, revision, schema=schema, app_role=role, destroy_keys=destroy_keys
            )
        except (migrations.KeysWouldBeDestroyed, CommandError) as error:
            raise click.ClickException(str(error)) from error
    click.echo(f"read side at revision {migrations.current(url, schema=schema) or 'base'}")


@main.command()
@click.option("--user", "user", required=True, help="User id (the token's `sub`).")
@click.option("--tenant", required=True, help="Tenant id.")
@click.option("--roles", default="user", show_default=True, help=ROLES_HELP)
@click.option(
    "--ttl",
    default=3600,
    show_default=True,
    type=int,
    help="Seconds until it expires (at most JWT_MAX_LIFETIME_SECONDS).",
)
def token(user: str, tenant: str, roles: str, ttl: int) -> None:
    """Print a signed development token (and nothing else) to stdout."""
    from interfaces.http.auth import AuthError, mint_token

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in ("user", "auditor", "admin")]
    if unknown:
        raise click.BadParameter(f"unknown role(s): {', '.join(unknown)}", param_hint="--roles")
    try:
        click.echo(mint_token(_settings(), user, tenant, wanted, ttl))
    except AuthError as error:
        raise click.ClickException(str(error)) from None


@main.group()
def keys() -> None:
    """Service master keys: generate one, rotate to it."""


@keys.command("generate")
@click.option(
    "--event-store",
    is_flag=True,
    help="Print an EVENT_STORE_CIPHER_KEY value instead (the optional at-rest layer).",
)
def keys_generate(event_store: bool) -> None:
    """Print a new ENCRYPTION_MASTER_KEYS entry (prepend it to rotate)."""
    from infrastructure.crypto import generate_event_store_key, generate_master_key_spec

    click.echo(generate_event_store_key() if event_store else generate_master_key_spec())


@keys.command("rotate")
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Data keys re-wrapped per batch.",
)
def keys_rotate(batch_size: int) -> None:
    """Re-wrap stored data keys under the active (first) master key.

    Every wrap is rewritten in the current format (under the key's wrapping subkey,
    bound to what it protects: message or tenant), those of older formats too, even
    under the active key.

    Prepend a new key to ENCRYPTION_MASTER_KEYS on every process first, then run
    this; content is never re-encrypted. Old keys may be removed once it reports
    that nothing needs them.
    """
    from interfaces.keyops import rotate_master_keys

    if not rotate_master_keys(_settings(), batch_size):
        raise SystemExit(1)


@main.command()
@click.argument("message_ids", nargs=-1, required=True, type=click.UUID)
@click.option("--tenant", required=True, help="The messages' tenant.")
@click.option(
    "--reason", type=click.Choice(["erasure", "retention"]), default="erasure", show_default=True
)
@click.option("--actor", default=None, help="Who asked for it (default: operator:$USER).")
def shred(message_ids: tuple[UUID, ...], tenant: str, reason: str, actor: str | None) -> None:
    """Destroy messages' content keys; their events stay for the audit trail."""
    import getpass

    from interfaces.keyops import shred_messages

    who = actor or f"operator:{getpass.getuser()}"
    if not shred_messages(_settings(), tenant, list(message_ids), reason, who):
        raise SystemExit(1)


@main.command()
@click.argument("projection")
@click.option(
    "--from",
    "start",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Re-apply events from this position on (only views whose rows are per event).",
)
@click.option("--batch-size", default=2000, show_default=True, type=click.IntRange(1, 50_000))
def replay(projection: str, start: int, batch_size: int) -> None:
    """Rebuild PROJECTION (messages, search, audit, queue_metrics) from the event log.

    The rebuild goes into a shadow copy that is swapped in at once; the service
    keeps serving from the live tables meanwhile.
    """
    from interfaces.replay import replay_projection
    from projections.catalog import named

    try:
        named(projection).check_replay(start)
    except (KeyError, ValueError) as error:
        raise click.BadParameter(str(error).strip('"'), param_hint="PROJECTION") from None
    _setup_logging()
    result = replay_projection(_settings(), projection, start, batch_size)
    click.echo(
        f"{result.projection}: {result.events} events re-applied in {result.seconds:.1f} s "
        f"({result.rate:,.0f} events/s); now at position {result.position}"
    )


main.add_command(bench_command, "bench")


@main.group()
def audit() -> None:
    """The audit trail: export it, verify the hash chain, sign checkpoints."""


def _caller(actor: str | None, tenant: str | None) -> Any:
    import getpass

    from interfaces.audit_tools import Caller

    return Caller(actor or f"operator:{getpass.getuser()}", tenant)


def _when(value: str | None, name: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            "use ISO 8601, e.g. 2024-12-01T00:00:00Z", param_hint=name
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit.command("export")
@click.option("--from", "start", help="Entries that occurred at or after this (ISO 8601).")
@click.option("--to", "end", help="Entries that occurred before this (ISO 8601).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--tenant", help="Only this tenant's entries (default: every tenant).")
@click.option(
    "--out", type=click.Path(dir_okay=False, writable=True), help="File (default stdout)."
)
@click.option("--actor", help="Who is exporting, for the record (default: operator:$USER).")
def audit_export(
    start: str | None,
    end: str | None,
    fmt: str,
    tenant: str | None,
    out: str | None,
    actor: str | None,
) -> None:
    """Export audit entries (never content) as JSON lines or CSV, with a progress bar."""
    from rich.console import Console

    from interfaces.audit_tools import export

    window = (_when(start, "--from"), _when(end, "--to"))
    with click.open_file(out or "-", "w") as sink:
        count = export(
            _settings(), _caller(actor, tenant), *window, fmt, sink, Console(stderr=True)
        )
    click.echo(f"exported {count} entries", err=True)


@audit.command("verify")
@click.option(
    "--checkpoints",
    type=click.Path(exists=True, dir_okay=False),
    help="Signed checkpoints (JSON lines) kept outside the database; default: the stored ones.",
)
@click.option(
    "--public-key",
    help="Trusted key (base64); default: AUDIT_PUBLIC_KEY, else from AUDIT_SIGNING_KEY.",
)
@click.option("--actor", help="Who is verifying, for the record (default: operator:$USER).")
def audit_verify(checkpoints: str | None, public_key: str | None, actor: str | None) -> None:
    """Recompute the hash chain over the event log; exit 1 naming the first bad position."""
    import json
    from pathlib import Path

    from rich.console import Console

    from interfaces.audit_tools import verify

    verdict, problems = verify(
        _settings(),
        _caller(actor, None),
        Path(checkpoints) if checkpoints else None,
        public_key,
        Console(stderr=True),
    )
    click.echo(json.dumps({**verdict.as_dict(), "problems": problems}))
    if not verdict.ok:
        click.echo(
            f"TAMPERED: first bad position {verdict.first_bad_position}: {verdict.reason}", err=True
        )
        raise SystemExit(1)
    if problems:
        raise SystemExit(1)


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain's current head (Ed25519) and print it, to keep outside the database."""
    import json

    from infrastructure.chain import ChainBroken
    from interfaces.audit_tools import checkpoint

    try:
        signed = checkpoint(_settings())
    except (ChainBroken, SettingsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(signed, sort_keys=True))


@audit.command("keygen")
def audit_keygen() -> None:
    """Print a new AUDIT_SIGNING_KEY value (and its public key on stderr)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from infrastructure.chain import generate_signing_key

    private = generate_signing_key()
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    click.echo(private)
    click.echo(f"public key: {base64.b64encode(public).decode()}", err=True)


if __name__ == "__main__":
    main()
