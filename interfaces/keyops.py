"""Operator commands on keys: master-key rotation and shredding (docs/API.md §9, §11)."""

from __future__ import annotations

from uuid import UUID

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from application.errors import CourierError
from application.ports import KeyUnwrapError
from application.rotation import KeyRotation
from domain.events import Context
from infrastructure.blindindex import HmacBlindIndex
from infrastructure.crypto import UnknownMasterKey
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.settings import Settings


def rotate_master_keys(settings: Settings, batch_size: int) -> bool:
    """Re-wrap every service-held data key under the active master key's wrapping
    subkey, bound to its message (wraps of older formats too), with progress.

    Returns whether every data key now sits under the active key, in the current format.
    """
    console = Console(stderr=True)
    container = build(settings, TOOL)
    try:
        rotation = KeyRotation(container.crypto.keyring, container.crypto.vault)
        active = rotation.keyring.active_key_id
        before = rotation.counts()
        pending = rotation.pending()
        console.print(
            f"active master key [bold]{active}[/]; data keys by master key: "
            + (", ".join(f"{k}={n}" for k, n in sorted(before.items())) or "none")
            + f"; in an older wrap format: {rotation.outdated()}"
        )
        with Progress(
            TextColumn("[bold]re-wrapping data keys"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("rotate", total=pending)
            report = rotation.run(batch_size, lambda n: progress.advance(task, n))
        after = rotation.counts()
        outdated = rotation.outdated()
        index_keys, index_error = _rewrap_index_keys(container.crypto.blind_index)
    finally:
        container.stop()
    click.echo(
        f"re-wrapped {report.rewrapped} data key(s) under {active}"
        + (
            f" ({report.changed_meanwhile} changed or shredded meanwhile)"
            if report.changed_meanwhile
            else ""
        )
    )
    for key_id, n in sorted(report.not_held.items()):
        click.echo(f"{n} data key(s) under {key_id}, which ENCRYPTION_MASTER_KEYS lacks", err=True)
    for key_id, n in sorted(report.damaged.items()):
        click.echo(f"{n} data key(s) under {key_id} failed to unwrap (damaged)", err=True)
    if index_error:
        click.echo(f"search index keys were not re-wrapped: {index_error}", err=True)
    else:
        click.echo(f"re-wrapped {index_keys} search index key(s) under {active}")
    if outdated:
        click.echo(f"{outdated} data key(s) still in an older wrap format", err=True)
    old = sorted(k for k, n in after.items() if k != active and n)
    if old or index_error:
        click.echo(f"still in use, keep in ENCRYPTION_MASTER_KEYS: {', '.join(old) or '?'}")
    else:
        click.echo(f"no stored key needs any master key but {active}: older ones may be retired")
    return report.complete and not index_error and not outdated


def _rewrap_index_keys(index: object) -> tuple[int, str]:
    """The blind index's per-tenant keys are wrapped by the same keyring: move them too."""
    if not isinstance(index, HmacBlindIndex):
        return 0, ""
    try:
        return index.rewrap(), ""
    except (UnknownMasterKey, KeyUnwrapError) as error:
        return 0, f"{type(error).__name__}: {error}"


def shred_messages(
    settings: Settings, tenant_id: str, message_ids: list[UUID], reason: str, actor: str
) -> bool:
    """Shred each message; returns whether all of them were."""
    container = build(settings, TOOL)
    ctx = Context(actor_id=actor, tenant_id=tenant_id, actor_role="admin")
    ok = True
    try:
        for message_id in message_ids:
            try:
                result = container.messaging.shred(ctx, message_id, reason)
            except CourierError as error:
                click.echo(f"{message_id}: {error.message}", err=True)
                ok = False
                continue
            click.echo(
                f"{message_id}: shredded ({reason}), "
                f"{result.keys_destroyed} wrapped key(s) destroyed"
            )
    finally:
        container.stop()
    return ok
