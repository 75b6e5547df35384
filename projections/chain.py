"""The audit chain: a hash over the event log in notification order, and its check.

Each stored event is hashed as it is stored — notification id, aggregate id, version,
topic and the raw ``state`` bytes, never a decoding of them — together with the hash
of the event before it. Changing a byte, deleting a row, inserting one or swapping two
events' positions changes every hash from there on, and ``verify`` names the first
position where the log and the chain disagree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, select

from infrastructure.storage.bulk import append_rows
from projections.tables import audit_chain

NAME = "audit_chain"
GENESIS = hashlib.sha256(b"courier:audit-chain:v1").digest()


class StoredNotification(Protocol):
    """What eventsourcing's ``Notification`` holds (read, never decoded, here)."""

    @property
    def id(self) -> int: ...
    @property
    def originator_id(self) -> Any: ...
    @property
    def originator_version(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def state(self) -> bytes: ...


def link(previous: bytes, n: StoredNotification) -> bytes:
    """The chain's hash at ``n``: SHA-256 over the previous hash and n's stored fields."""
    digest = hashlib.sha256(previous)
    parts = (
        str(n.id).encode(),
        str(n.originator_id).encode(),
        str(n.originator_version).encode(),
        n.topic.encode(),
        bytes(n.state),
    )
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def head(conn: Connection) -> tuple[int, bytes]:
    """The last chained position and its hash ((0, GENESIS) before the first event)."""
    row = conn.execute(
        select(audit_chain.c.position, audit_chain.c.hash)
        .order_by(audit_chain.c.position.desc())
        .limit(1)
    ).first()
    return (int(row.position), bytes(row.hash)) if row else (0, GENESIS)


class ChainView:
    """Appends one link per stored event; runs on the raw log (see ``runner.RawLog``)."""

    name = NAME

    def apply(self, event: Any, conn: Connection, position: int) -> None:
        self.apply_many([(position, event)], conn)

    def apply_many(self, batch: Sequence[tuple[int, Any]], conn: Connection) -> None:
        _, previous = head(conn)
        rows = []
        for position, notification in batch:
            previous = link(previous, notification)
            rows.append({"position": position, "hash": previous})
        if rows:
            append_rows(conn, audit_chain, rows)


@dataclass(frozen=True)
class Verdict:
    """The answer of ``GET /api/audit/verify`` and ``courier audit verify``."""

    ok: bool
    checked: int
    first_bad_position: int | None
    head: int
    reason: str | None = None
    log_head: int | None = None  # the last stored event's position
    audited_through: int = 0  # the audit tables were compared with the log up to here
    checkpoint: dict[str, Any] | None = None  # {position, signedAt} of the one checked
    incremental: bool = False  # only what was chained since the last full walk was walked

    def as_dict(self) -> dict[str, Any]:
        lag = None if self.log_head is None else max(0, self.log_head - self.head)
        return {
            "ok": self.ok,
            "checked": self.checked,
            "firstBadPosition": self.first_bad_position,
            "chainedThrough": self.head,
            "reason": self.reason,
            "logHead": self.log_head,
            "lag": lag,
            "auditedThrough": self.audited_through,
            "checkpoint": self.checkpoint,
            "incremental": self.incremental,
        }


def verify(
    log: Iterable[StoredNotification],
    links: Iterable[tuple[int, bytes]],
    head_position: int,
    anchors: Mapping[int, bytes] | None = None,
    start: tuple[int, bytes] = (0, GENESIS),
) -> Verdict:
    """Walk the log and the chain side by side up to ``head_position``.

    ``log`` and ``links`` are in position order and stop at ``head_position``; they
    begin after ``start`` (a position already verified and its hash).
    ``anchors`` are hashes from signed checkpoints kept outside the database: they
    catch a chain that was recomputed over a changed log.
    """
    anchors = dict(anchors or {})
    events: Iterator[StoredNotification] = iter(log)
    chain: Iterator[tuple[int, bytes]] = iter(links)
    previous, checked = start[1], 0
    n, c = next(events, None), next(chain, None)

    def bad(position: int, reason: str) -> Verdict:
        return Verdict(False, checked, position, head_position, reason)

    while n is not None or c is not None:
        passed = [p for p in anchors if p < min(x for x in (_pos(n), _pos(c)) if x is not None)]
        if passed:
            return bad(min(passed), "a signed checkpoint's event is missing from the log")
        if c is None:
            assert n is not None
            return bad(n.id, "an event that the chain never saw is in the log")
        if n is None or n.id > c[0]:
            return bad(c[0], "an event the chain recorded is missing from the log")
        if n.id < c[0]:
            return bad(n.id, "an event that the chain never saw is in the log")
        previous = link(previous, n)
        if previous != c[1]:
            return bad(n.id, "the event differs from what was chained")
        anchored = anchors.pop(n.id, None)
        if anchored is not None and anchored != previous:
            return bad(n.id, "the chain differs from a signed checkpoint")
        checked += 1
        n, c = next(events, None), next(chain, None)
    if anchors:
        return bad(min(anchors), "a signed checkpoint lies beyond the chain")
    return Verdict(True, checked, None, head_position)


def _pos(item: StoredNotification | tuple[int, bytes] | None) -> int | None:
    if item is None:
        return None
    return item[0] if isinstance(item, tuple) else item.id
