"""Every projection: its view, the tables it alone writes, and how it may be rebuilt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table

from projections import audit, chain, queue_metrics
from projections.messages_view import MessagesView
from projections.runner import View
from projections.search import SearchView
from projections.tables import (
    AUDIT_TABLES,
    QUEUE_METRIC_TABLES,
    READ_TABLES,
    SEARCH_TABLES,
    audit_chain,
)


@dataclass(frozen=True)
class ReadModel:
    """A projection as the catalog knows it: its view, the tables it alone writes, how
    replay may rebuild it."""

    name: str
    view: Callable[[], View]
    tables: tuple[Table, ...]
    raw: bool = False  # follows the stored log without decoding it
    by_position: bool = False  # each row carries the position of the event that made it
    replayable: bool = True

    def check_replay(self, start: int) -> None:
        """Refuse a rebuild this projection cannot do, saying why."""
        if not self.replayable:
            raise ValueError(
                f"{self.name} is not rebuilt by replay: recomputing it would bless whatever "
                "is in the log now; verify it with `courier audit verify` instead"
            )
        if start and not self.by_position:
            raise ValueError(
                f"{self.name} keeps state across events, so it can only be rebuilt from the "
                "start (--from 0)"
            )


MESSAGES = ReadModel("messages", MessagesView, READ_TABLES)
SEARCH = ReadModel("search", SearchView, SEARCH_TABLES)
AUDIT = ReadModel(audit.NAME, audit.AuditView, AUDIT_TABLES, by_position=True)
AUDIT_CHAIN = ReadModel(chain.NAME, chain.ChainView, (audit_chain,), raw=True, replayable=False)
QUEUE_METRICS = ReadModel(queue_metrics.NAME, queue_metrics.QueueMetricsView, QUEUE_METRIC_TABLES)

PROJECTIONS: tuple[ReadModel, ...] = (MESSAGES, SEARCH, AUDIT, AUDIT_CHAIN, QUEUE_METRICS)


def named(name: str) -> ReadModel:
    for projection in PROJECTIONS:
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in PROJECTIONS)
    raise KeyError(f"no projection named {name!r} (known: {known})")
