"""`courier keys generate|rotate` and `courier shred`: the service's master keys and
destroying messages' content keys."""

from __future__ import annotations

from uuid import UUID

import click

from interfaces.cli.common import load_settings


@click.group()
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

    if not rotate_master_keys(load_settings(), batch_size):
        raise SystemExit(1)


@click.command()
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
    if not shred_messages(load_settings(), tenant, list(message_ids), reason, who):
        raise SystemExit(1)
