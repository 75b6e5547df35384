"""`courier replay`: rebuild a read model from the event log, with a progress bar."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.settings import Settings
from projections.catalog import named
from projections.replay import Rebuilt, rebuild


def replay_projection(
    settings: Settings, name: str, start: int = 0, batch: int = 2000, console: Console | None = None
) -> Rebuilt:
    """Rebuild projection ``name`` beside the live one and swap it in (projections.replay)."""
    projection = named(name)
    projection.check_replay(start)
    container = build(settings, TOOL)
    try:
        with Progress(
            TextColumn("[bold]replay {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} positions"),
            TextColumn("{task.fields[rate]} events/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(name, total=container.event_log.last_position(), rate="0")
            rate = _Rate()

            def report(position: int, head: int, events: int) -> None:
                bar.update(task, completed=position, total=head, rate=rate(events))

            result = rebuild(
                container.engine,
                container.event_log,
                projection,
                start=start,
                batch=batch,
                progress=report,
                schema=settings.postgres_schema,
            )
            bar.update(task, completed=result.position, total=result.position)
        return result
    finally:
        container.stop()


class _Rate:
    """Events per second since the rebuild began, for the progress bar."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, events: int) -> str:
        return f"{events / max(time.monotonic() - self.started, 1e-6):,.0f}"
