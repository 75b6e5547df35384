"""Settings, read once from the environment (docs/API.md §10, .env.example).

``load`` only reads: the embedded default's generated secrets are made at process start
by ``infrastructure.runtime.bootstrap`` (``infrastructure/secretfiles.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from application.jobs import QUEUES, QueueSettings
from infrastructure.settings.groups import (
    QUEUE_SETTINGS,
    HealthRules,
    Limits,
    NotificationSettings,
    TokenRules,
    Trimmed,
    is_production,
    jwt_algorithm,
    queue_settings,
)
from infrastructure.settings.stores import check_cipher_key, check_database_tls, database_params
from infrastructure.settings.values import (
    Flag,
    Number,
    SettingsError,
    Whole,
    at_least,
    between,
    explain,
    ws_origins,
)

MIN_JWT_SECRET_BYTES = 32
MAKE_A_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
# The groups, each read from the same flat environment.
GROUPS = ("health", "notifications", "limits", "tokens")


def check_jwt_secret(secret: str) -> None:
    size = len(secret.encode("utf-8"))
    if size < MIN_JWT_SECRET_BYTES:
        raise SettingsError(
            f"JWT_SECRET is {size} bytes long; an HS256 secret must be at least "
            f"{MIN_JWT_SECRET_BYTES} bytes of randomness. Make one with: {MAKE_A_SECRET}"
        )


def _whole_seconds(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be whole seconds, 0 or more (0: no limit), got {value}")
    return value


Seconds = Annotated[Whole, AfterValidator(_whole_seconds)]


def _ws_origins(raw: object) -> object:
    return ws_origins(raw) if isinstance(raw, str) else raw


# What ``load`` was asked to read instead of the process environment (tests, tools).
_given: ContextVar[Mapping[str, str] | None] = ContextVar("environment", default=None)


class _Environment(PydanticBaseSettingsSource):
    """The whole environment (the process's, or the one given to ``load``), from which the
    settings and each group take their own variables."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        given = _given.get()
        return dict(os.environ if given is None else given)


class Settings(BaseSettings):
    """Every setting of a process; ``Settings()`` reads the process environment, and only
    it (no .env file: the process manager or the shell exports the variables)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=True, validate_by_name=True
    )

    # --- stores (a URL may hold a password: URLs stay out of repr, secrets are SecretStr)
    data_dir: Annotated[Path, AfterValidator(Path.resolve)] = Field(
        default=Path("var"), validation_alias="COURIER_DATA_DIR"
    )
    # default: the embedded SQLite store under data_dir
    database_url: str = Field(
        default=None, validation_alias="DATABASE_URL", repr=False, validate_default=True
    )
    courier_env: str = Field(default="", validation_alias="COURIER_ENV")
    pgsslmode: str | None = Field(default=None, validation_alias="PGSSLMODE")  # libpq's own
    allow_insecure_database: Flag = Field(default=False, validation_alias="ALLOW_INSECURE_DATABASE")
    postgres_schema: str | None = Field(default=None, validation_alias="POSTGRES_SCHEMA")
    postgres_pool_size: Whole = Field(default=4, validation_alias="POSTGRES_POOL_SIZE")
    postgres_max_overflow: Whole = Field(default=8, validation_alias="POSTGRES_MAX_OVERFLOW")
    # s a PostgreSQL statement waits for a lock (0: forever)
    lock_timeout: Seconds = Field(default=2, validation_alias="POSTGRES_LOCK_TIMEOUT")
    # s before the server ends a stalled transaction
    idle_in_transaction_timeout: Seconds = Field(
        default=5, validation_alias="POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT"
    )
    database_app_role: str | None = Field(default=None, validation_alias="DATABASE_APP_ROLE")
    event_store_cipher_key: Annotated[SecretStr | None, AfterValidator(check_cipher_key)] = Field(
        default=None, validation_alias="EVENT_STORE_CIPHER_KEY"
    )
    broker_url: str = Field(default="memory://", validation_alias="BROKER_URL", repr=False)
    visibility_timeout: Number = Field(default=660.0, validation_alias="BROKER_VISIBILITY_TIMEOUT")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL", repr=False)

    # --- security: the embedded default's secrets are made by bootstrap when unset
    jwt_secret: SecretStr | None = Field(default=None, validation_alias="JWT_SECRET")
    jwt_public_key_file: Path | None = Field(default=None, validation_alias="JWT_PUBLIC_KEY_FILE")
    jwt_public_key: str | None = Field(
        default=None, validation_alias="JWT_PUBLIC_KEY", validate_default=True
    )
    master_keys: SecretStr | None = Field(default=None, validation_alias="ENCRYPTION_MASTER_KEYS")
    require_encryption: Flag = Field(default=False, validation_alias="REQUIRE_ENCRYPTION")

    # --- audit and retention
    audit_signing_key: SecretStr | None = Field(default=None, validation_alias="AUDIT_SIGNING_KEY")
    audit_public_key: Trimmed = Field(default=None, validation_alias="AUDIT_PUBLIC_KEY")
    # the projections process signs the chain (0: never)
    audit_checkpoint_seconds: Annotated[Number, at_least(0.0)] = Field(
        default=300.0, validation_alias="AUDIT_CHECKPOINT_SECONDS"
    )
    # GET /api/audit/verify re-walks everything
    audit_verify_full_seconds: Annotated[Number, at_least(0.0)] = Field(
        default=900.0, validation_alias="AUDIT_VERIFY_FULL_SECONDS"
    )
    retention_days: Whole = Field(default=0, validation_alias="RETENTION_DAYS")
    retention_interval: Number = Field(
        default=3600.0, validation_alias="RETENTION_INTERVAL_SECONDS"
    )
    job_runs_retention_days: Number = Field(default=7.0, validation_alias="JOB_RUNS_RETENTION_DAYS")

    # --- messages and WebSockets
    max_content_bytes: Whole = Field(default=65536, validation_alias="MAX_CONTENT_BYTES")
    ws_send_queue: Whole = Field(default=256, validation_alias="WS_SEND_QUEUE")
    ws_idle_seconds: Number = Field(default=120.0, validation_alias="WS_IDLE_SECONDS")
    ws_max_per_user: Annotated[Whole, at_least(1)] = Field(
        default=16, validation_alias="WS_MAX_PER_USER"
    )
    # Origins whose pages may open the WebSocket; empty: the page's own (and CORS_ORIGINS).
    ws_allowed_origins: Annotated[tuple[str, ...], BeforeValidator(_ws_origins)] = Field(
        default=(), validation_alias="WS_ALLOWED_ORIGINS"
    )
    # a WebSocket ticket's life (single use)
    ws_ticket_seconds: Annotated[Whole, between(1, 300)] = Field(
        default=30, validation_alias="WS_TICKET_SECONDS"
    )

    # --- processes
    poll_interval: Number = Field(default=0.05, validation_alias="COURIER_POLL_INTERVAL")
    reconcile_after: Number = Field(default=60.0, validation_alias="RECONCILE_AFTER_SECONDS")
    # worker, relay, projections yield the CPU to the API
    background_nice: Annotated[Whole, between(0, 19)] = Field(
        default=10, validation_alias="BACKGROUND_NICE"
    )
    fault_inject: str = Field(default="", validation_alias="FAULT_INJECT")
    queues: dict[str, QueueSettings] = Field(default_factory=lambda: queue_settings({}))

    # --- groups, each read from the same environment
    health: HealthRules = Field(default_factory=HealthRules)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    limits: Limits = Field(default_factory=Limits)
    tokens: TokenRules = Field(default_factory=TokenRules)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _Environment(settings_cls)

    @model_validator(mode="before")
    @classmethod
    def _from_one_environment(cls, env: Any) -> Any:
        """An empty variable is unset; the groups and the queues read the same variables."""
        if not isinstance(env, Mapping):
            return env
        present = {k: v for k, v in env.items() if v != ""}
        return {**present, **dict.fromkeys(GROUPS, present), "queues": present}

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return f"sqlite:///{info.data['data_dir'] / 'courier.db'}"
        if not str(value).startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise SettingsError(
                "DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB, "
                f"got {str(value).split('://')[0]}://…"
            )
        return value

    @field_validator("jwt_public_key", mode="before")
    @classmethod
    def _jwt_public_key(cls, inline: Any, info: ValidationInfo) -> Any:
        path = info.data.get("jwt_public_key_file")
        if inline and path:
            raise SettingsError("set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both")
        if path:
            try:
                inline = Path(path).read_text()
            except OSError as error:
                raise SettingsError(
                    f"JWT_PUBLIC_KEY_FILE {str(path)!r} cannot be read: {error}"
                ) from None
        if not inline:
            return None
        jwt_algorithm(inline)
        return inline

    @field_validator("queues", mode="before")
    @classmethod
    def _queues(cls, env: Any) -> Any:
        return queue_settings(env) if isinstance(env, Mapping) else env

    @field_validator("limits", mode="before")
    @classmethod
    def _body_fits_the_largest_message(cls, env: Any, info: ValidationInfo) -> Any:
        """Unless ``MAX_BODY_BYTES`` says otherwise, a body holds the largest message
        (content may be escaped up to 6 bytes per character)."""
        content = info.data.get("max_content_bytes")
        if not isinstance(env, Mapping) or "MAX_BODY_BYTES" in env or content is None:
            return env
        floor = Limits.model_fields["max_body_bytes"].default
        return {**env, "MAX_BODY_BYTES": max(floor, 6 * content + 64 * 1024)}

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.embedded:
            if not self.jwt_secret and not self.jwt_public_key:
                raise SettingsError(
                    "JWT_SECRET is missing, and has no default outside the embedded runtime: "
                    f"set it to at least {MIN_JWT_SECRET_BYTES} random bytes shared by every "
                    f"API process ({MAKE_A_SECRET})"
                )
            if not self.master_keys:
                raise SettingsError(
                    "ENCRYPTION_MASTER_KEYS is missing, and has no default outside the "
                    "embedded runtime: run `courier keys generate` and share the value with "
                    "every process"
                )
        if self.jwt_secret:
            check_jwt_secret(self.jwt_secret.get_secret_value())
        check_database_tls(
            self.database_url, self.pgsslmode, self.production, self.allow_insecure_database
        )
        return self

    @property
    def production(self) -> bool:
        return is_production({"COURIER_ENV": self.courier_env})

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))

    def hs256_secret(self) -> str:
        """``JWT_SECRET`` (on the embedded default, the one bootstrap keeps in data_dir)."""
        if self.jwt_secret is None:
            raise SettingsError("JWT_SECRET is not set (and no public key is)")
        return self.jwt_secret.get_secret_value()

    def master_key_spec(self) -> str:
        """``ENCRYPTION_MASTER_KEYS`` (on the embedded default, bootstrap's in data_dir)."""
        if self.master_keys is None:
            raise SettingsError("ENCRYPTION_MASTER_KEYS is not set")
        return self.master_keys.get_secret_value()

    def sqlalchemy_url(self) -> str:
        """The read side's URL (on SQLite a file beside the event store)."""
        if self.is_postgres:
            return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        return f"sqlite:///{self.sqlite_path().with_suffix('.read.db')}"

    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    def database_params(self) -> dict[str, str]:
        return database_params(self.database_url)

    @classmethod
    def variables(cls) -> set[str]:
        """Every environment variable the settings read (each queue's as ``QUEUE_*``)."""
        groups: list[type[BaseModel]] = [cls, HealthRules, NotificationSettings, Limits, TokenRules]
        names = {
            str(f.validation_alias)
            for group in groups
            for f in group.model_fields.values()
            if f.validation_alias
        }
        return names | {f"QUEUE_{q}_{s}" for q in QUEUES for s in QUEUE_SETTINGS}


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting once, from ``env`` or else the process environment. With nothing
    set: the embedded default under ./var/ (its secrets made by bootstrap)."""
    reading = _given.set(env)
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(explain(error)) from None
    finally:
        _given.reset(reading)
