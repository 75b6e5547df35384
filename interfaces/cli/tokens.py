"""`courier token`: a signed development token."""

from __future__ import annotations

import click

from interfaces.cli.common import load_settings

ROLES_HELP = "comma-separated subset of user, auditor, admin"


@click.command()
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
        click.echo(mint_token(load_settings(), user, tenant, wanted, ttl))
    except AuthError as error:
        raise click.ClickException(str(error)) from None
