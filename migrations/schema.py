"""Every table the migrations make, on one ``MetaData`` to compare them with: the
followers' positions, the write side's tables and the read models'."""

from __future__ import annotations

from sqlalchemy import MetaData

from infrastructure import tables as write_side
from infrastructure.storage import positions
from projections import tables as read_models

metadata = MetaData()
for _source in (positions.metadata, write_side.metadata, read_models.metadata):
    for _table in _source.sorted_tables:
        _table.to_metadata(metadata)
