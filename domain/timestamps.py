"""Moments as the API, the read side and the audit trail write them."""

from __future__ import annotations

from datetime import datetime


def iso(value: datetime) -> str:
    """RFC 3339 with ``Z`` for UTC; a naive value (as SQLite returns) is taken as UTC."""
    text = value.isoformat()
    return text.replace("+00:00", "Z") if value.tzinfo is not None else text + "Z"
