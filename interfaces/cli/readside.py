"""`courier migrate` and `courier replay`: the read side's schema and rebuilding a view."""

from __future__ import annotations

import click

from interfaces.cli.common import load_settings, setup_logging


@click.command(context_settings={"ignore_unknown_options": True})  # `down -1` is a revision
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

    settings = load_settings()
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


@click.command()
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
    setup_logging()
    result = replay_projection(load_settings(), projection, start, batch_size)
    click.echo(
        f"{result.projection}: {result.events} events re-applied in {result.seconds:.1f} s "
        f"({result.rate:,.0f} events/s); now at position {result.position}"
    )
