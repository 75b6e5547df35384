"""`courier audit export|verify|checkpoint|keygen`."""

from __future__ import annotations

from typing import Any

import click

from infrastructure.settings import SettingsError
from interfaces.cli.common import load_settings


@click.group()
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
            load_settings(), _caller(actor, tenant), *window, fmt, sink, Console(stderr=True)
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
        load_settings(),
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

    from infrastructure.checkpoints import ChainBroken
    from interfaces.audit_tools import checkpoint

    try:
        signed = checkpoint(load_settings())
    except (ChainBroken, SettingsError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(signed, sort_keys=True))


@audit.command("keygen")
def audit_keygen() -> None:
    """Print a new AUDIT_SIGNING_KEY value (and its public key on stderr)."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from infrastructure.checkpoints import generate_signing_key

    private = generate_signing_key()
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(private))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    click.echo(private)
    click.echo(f"public key: {base64.b64encode(public).decode()}", err=True)
