"""The one translation of the settings into eventsourcing's own environment
(``PERSISTENCE_MODULE``, ``POSTGRES_*`` or ``SQLITE_*``, ``CIPHER_*``)."""

from __future__ import annotations

from urllib.parse import unquote, urlencode, urlparse

from infrastructure.settings.model import Settings

PG_STORE_FACTORY = "infrastructure.pgstore:Factory"
CONNECT_PARAMS = "POSTGRES_CONNECT_PARAMS"  # read by infrastructure.pgstore


def eventstore_env(settings: Settings) -> dict[str, str]:
    """eventsourcing's own keys for the chosen store, and its at-rest cipher if set."""
    if settings.is_postgres:
        p = urlparse(settings.database_url)
        env = {
            # eventsourcing's PostgreSQL store, with the URL's query as libpq parameters
            "PERSISTENCE_MODULE": PG_STORE_FACTORY,
            "POSTGRES_DBNAME": p.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": p.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(p.port or 5432),
            "POSTGRES_USER": unquote(p.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(p.password or ""),
            "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(settings.postgres_max_overflow),
            "POSTGRES_IDLE_CONNECTION_TIMEOUT": "30",
            "POSTGRES_CONNECT_TIMEOUT": "5",
            # whole seconds, as eventsourcing reads them
            "POSTGRES_LOCK_TIMEOUT": str(settings.lock_timeout),
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(
                settings.idle_in_transaction_timeout
            ),
        }
        if p.query:
            env[CONNECT_PARAMS] = urlencode(settings.database_params())
        if settings.postgres_schema:
            env["POSTGRES_SCHEMA"] = settings.postgres_schema
    else:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.sqlite_path()),
            "SQLITE_LOCK_TIMEOUT": "30",
        }
    if settings.event_store_cipher_key:
        env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
        env["CIPHER_KEY"] = settings.event_store_cipher_key.get_secret_value()
    return env
