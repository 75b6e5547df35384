"""Alembic migrations of the read side (the event store's tables belong to eventsourcing).

Configured in code by ``infrastructure.migrate``; there is no alembic.ini.
"""
