"""The `courier` command (docs/API.md §11)."""

from __future__ import annotations

import importlib

import click

from interfaces.cli.audit import audit
from interfaces.cli.keys import keys, shred
from interfaces.cli.processes import projections, relay, serve, worker
from interfaces.cli.readside import migrate, replay
from interfaces.cli.tokens import token


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Courier: secure messaging for healthcare teams.

    With nothing configured, every command uses the embedded default (SQLite and an
    in-process broker under ./var/). Set DATABASE_URL, BROKER_URL and REDIS_URL to
    run the services runtime; see .env.example.
    """


for command in (serve, worker, relay, projections, migrate, token, keys, shred, replay, audit):
    main.add_command(command)


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run workload W1 against a services runtime of its own, and the floors."""
    # Loaded when run: the product itself never imports the benchmarks.
    command = importlib.import_module("benchmarks.command").bench
    command.main(args=ctx.args, prog_name=ctx.command_path)
