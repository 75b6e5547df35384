"""Column types and sizes shared by every table (``infrastructure.tables``,
``projections.tables``)."""

from __future__ import annotations

from sqlalchemy import JSON
from sqlalchemy.dialects.postgresql import JSONB

JSONVariant = JSON().with_variant(JSONB(), "postgresql")
ID = 36
USER = 128
