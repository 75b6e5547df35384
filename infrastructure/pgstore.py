"""eventsourcing's PostgreSQL store, with the libpq parameters of ``DATABASE_URL``'s query.

eventsourcing 9.5.6 builds psycopg's connection arguments from its ``POSTGRES_*`` keys
alone and has none for TLS (``sslmode``, ``sslrootcert``, ``sslcert``, …). This factory
adds ``POSTGRES_CONNECT_PARAMS`` (the URL's query, form-encoded, from
``infrastructure.settings.eventstore_env``) to its pool's arguments before the pool first
connects, so they reach every connection of the event store and the store gate's probe.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType

from infrastructure.settings import CONNECT_PARAMS

# What eventsourcing sets itself: the URL may not change the database it names.
OWN = frozenset({"dbname", "host", "port", "user", "password", "row_factory"})


class Factory(PostgresFactory):
    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        params = dict(parse_qsl(self.env.get(CONNECT_PARAMS) or ""))
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        kwargs.update({k: v for k, v in params.items() if k not in OWN})
