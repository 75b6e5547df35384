"""`courier audit`: export the trail, verify the chain, sign checkpoints.

Answers go to stdout (or ``--out``); progress bars go to stderr, so that an export
can be piped. Each run is recorded as an ``AuditQueried`` event, like an auditor's
query over HTTP.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from application.access import AccessLog
from domain.events import Context
from infrastructure.checkpoints import BadCheckpoint, check_signature, load_public_key
from infrastructure.runtime.bootstrap import TOOL, build
from infrastructure.runtime.container import Container
from infrastructure.settings import Settings
from projections.audit_queries import EventFilter
from projections.chain import Verdict

COLUMNS = (
    "position",
    "aggregateId",
    "aggregateType",
    "version",
    "type",
    "actorId",
    "actorRole",
    "tenantId",
    "occurredAt",
    "data",
)
ALL_TENANTS = "*"


@dataclass(frozen=True)
class Caller:
    actor_id: str
    tenant_id: str | None

    def context(self) -> Context:
        return Context(self.actor_id, self.tenant_id or ALL_TENANTS, actor_role="auditor")


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def _container(settings: Settings) -> Iterator[Container]:
    container = build(settings, TOOL)
    try:
        yield container
    finally:
        container.stop()


def export(
    settings: Settings,
    caller: Caller,
    start: datetime | None,
    end: datetime | None,
    fmt: str,
    out: IO[str],
    progress: Console,
) -> int:
    """Write every entry in [start, end) as JSON lines or CSV; the number written."""
    where = EventFilter(start=start, end=end)
    written = 0
    with _container(settings) as container, _bar(progress) as bar:
        total = container.audit.count(caller.tenant_id, where)
        task = bar.add_task("export", total=total)
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(COLUMNS)
        for entries in container.audit.export(caller.tenant_id, where):
            for entry in entries:
                if writer is not None:
                    writer.writerow([_cell(entry, column) for column in COLUMNS])
                else:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")
            written += len(entries)
            bar.update(task, completed=written)
        params = where.params() | {"format": fmt}
        AccessLog(container.messaging).audit_queried(caller.context(), "export", params, written)
    return written


def _cell(entry: dict[str, Any], column: str) -> Any:
    return json.dumps(entry[column], sort_keys=True) if column == "data" else entry[column]


def verify(
    settings: Settings,
    caller: Caller,
    checkpoints: Path | None,
    public_key: str | None,
    progress: Console,
) -> tuple[Verdict, list[str]]:
    """Recompute the chain; check every checkpoint's signature and hash on the way."""
    with _container(settings) as container, _bar(progress) as bar:
        trusted = _trusted(container, public_key)
        problems: list[str] = []
        anchors: dict[int, bytes] = {}
        found = (
            _read_checkpoints(checkpoints) if checkpoints else container.chain.stored_checkpoints()
        )
        if found and trusted is None:
            problems.append("checkpoints were not checked: no public key (--public-key)")
            found = []
        for checkpoint in found:
            assert trusted is not None
            try:
                position, digest = check_signature(checkpoint, trusted)
                anchors[position] = digest
            except BadCheckpoint as error:
                problems.append(f"checkpoint at {checkpoint.get('position')!r}: {error}")
        task = bar.add_task("verify", total=container.chain.chained_through())
        verdict = container.chain.verify(anchors, lambda p: bar.update(task, completed=p))
        bar.update(task, completed=verdict.head)
        params = {"checkpoints": str(len(anchors))}
        AccessLog(container.messaging).audit_queried(
            caller.context(), "verify", params, verdict.checked
        )
    return verdict, problems


def checkpoint(settings: Settings) -> dict[str, Any]:
    with _container(settings) as container:
        return container.chain.checkpoint()


def _trusted(container: Container, public_key: str | None) -> Ed25519PublicKey | None:
    if public_key:
        return load_public_key(public_key)
    return container.chain.trusted_key()


def _read_checkpoints(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                found.append({"position": None, "format": "unreadable"})
    return found
