"""Rebuilding a read model from the event log."""

from __future__ import annotations

import time

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import delete

from infrastructure.bootstrap import TOOL, build
from infrastructure.settings import Settings
from projections.messages import MessagesView
from projections.runner import ProjectionRunner
from projections.tables import READ_TABLES, followers


def replay_projection(settings: Settings, name: str) -> None:
    """Empty the view's tables and position, then apply the whole log again."""
    container = build(settings, TOOL)
    try:
        log_ = container.event_log
        runner = ProjectionRunner(MessagesView(), container.engine, log_, batch_size=2000)
        with container.engine.begin() as conn:
            for table in reversed(READ_TABLES):
                conn.execute(delete(table))
            conn.execute(delete(followers).where(followers.c.name == name))
        total = log_.last_position()
        started = time.monotonic()
        with Progress(
            TextColumn("[bold]replay {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} positions"),
            TextColumn("{task.fields[rate]} events/s"),
            TimeRemainingColumn(),
        ) as progress:
            task = progress.add_task(name, total=total, rate="0")
            position, events = 0, 0
            while position < total:
                batch = log_.read(position, 2000)
                if not batch:
                    break
                runner.apply_batch(batch)
                position = batch[-1][0]
                events += len(batch)
                rate = events / max(time.monotonic() - started, 1e-6)
                progress.update(task, completed=position, rate=f"{rate:,.0f}")
    finally:
        container.stop()
