"""Where the benchmarks run unless told otherwise: the machine's PostgreSQL and Redis."""

DEFAULT_DATABASE_URL = "postgresql://root@127.0.0.1:5432/test"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/10"
