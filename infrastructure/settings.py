"""Settings, read once from the environment (docs/API.md §10, .env.example)."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlparse

from application.jobs import DEFAULT_QUEUE_SETTINGS, QUEUES, QueueSettings


class SettingsError(Exception):
    """A setting is missing or malformed; the message says which and what to do."""


@dataclass(frozen=True)
class HealthRules:
    """When a queue is degraded (docs/QUEUES.md): ``QUEUE_HEALTH_*``."""

    stall_seconds: float = 60.0  # jobs wait and none has started for this long
    failure_rate: float = 0.2  # failed attempts / finished attempts over 5 minutes
    min_attempts: int = 5  # fewer finished attempts than this: no failure-rate verdict


@dataclass(frozen=True)
class NotificationSettings:
    """Notification providers (docs/REALTIME.md); a channel without one is skipped."""

    # Secrets stay out of repr (a logged Settings must not show them).
    smtp_url: str | None = field(default=None, repr=False)  # smtp://[user:pass@]host[:port]
    smtp_from: str = "Courier <no-reply@courier.invalid>"
    push_webhook_url: str | None = None  # receives FCM HTTP v1 shaped JSON
    push_webhook_token: str | None = field(default=None, repr=False)
    sms_api_url: str | None = None  # base URL; POST {base}/messages
    sms_api_key: str | None = field(default=None, repr=False)
    sms_from: str = "Courier"
    timeout_seconds: float = 5.0
    preview: bool = False  # NOTIFY_PREVIEW: plain messages' text in notifications


def notification_settings(env: Mapping[str, str]) -> NotificationSettings:
    """``SMTP_*``, ``PUSH_WEBHOOK_*``, ``SMS_*`` and ``NOTIFY_TIMEOUT_SECONDS``."""
    schemes = {
        "SMTP_URL": ("smtp", "smtps"),
        "PUSH_WEBHOOK_URL": ("http", "https"),
        "SMS_API_URL": ("http", "https"),
    }
    for key, allowed in schemes.items():
        value = env.get(key) or ""
        parsed = urlparse(value)
        if value and (parsed.scheme not in allowed or not parsed.hostname):
            raise SettingsError(
                f"{key} must be a URL starting with {' or '.join(s + '://' for s in allowed)}"
            )
    _check_smtp_tls(env)
    defaults = NotificationSettings()
    return NotificationSettings(
        smtp_url=env.get("SMTP_URL") or None,
        smtp_from=env.get("SMTP_FROM") or defaults.smtp_from,
        push_webhook_url=env.get("PUSH_WEBHOOK_URL") or None,
        push_webhook_token=env.get("PUSH_WEBHOOK_TOKEN") or None,
        sms_api_url=env.get("SMS_API_URL") or None,
        sms_api_key=env.get("SMS_API_KEY") or None,
        sms_from=env.get("SMS_FROM") or defaults.sms_from,
        timeout_seconds=_float(env, "NOTIFY_TIMEOUT_SECONDS", defaults.timeout_seconds),
        preview=flag(env, "NOTIFY_PREVIEW"),
    )


def smtp_starttls(url: str) -> bool:
    """Whether an ``smtp://`` URL asks for STARTTLS (``?starttls=1``)."""
    value = parse_qs(urlparse(url).query).get("starttls", ["0"])[0]
    return value.strip().lower() in TRUE


def _check_smtp_tls(env: Mapping[str, str]) -> None:
    """Mail leaves the host: ``smtp://`` without STARTTLS only when explicitly allowed."""
    url = env.get("SMTP_URL") or ""
    if urlparse(url).scheme != "smtp" or smtp_starttls(url) or flag(env, "SMTP_ALLOW_PLAINTEXT"):
        return
    raise SettingsError(
        "SMTP_URL is smtp:// without STARTTLS: mail, and the SMTP password, would cross the "
        "network in plain text. Use smtps://host:465, or add ?starttls=1 (port 587), or set "
        "SMTP_ALLOW_PLAINTEXT=1 to accept it knowingly (e.g. a relay on localhost)"
    )


TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def flag(env: Mapping[str, str], key: str) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (unset: no)."""
    value = (env.get(key) or "").strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise SettingsError(f"{key} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")


@dataclass(frozen=True)
class TokenRules:
    """What a bearer token must also say (docs/SECURITY.md, "Access"): ``JWT_ISSUER``,
    ``JWT_AUDIENCE`` (checked when set) and ``JWT_MAX_LIFETIME_SECONDS`` (``exp - iat``)."""

    issuer: str | None = None
    audience: str | None = None
    max_lifetime: float = 3600.0


# ``JWT_MAX_LIFETIME_SECONDS`` when unset: an hour under ``COURIER_ENV=production``; a day
# elsewhere (development, tests, benchmarks), where tools mint tokens for a whole run.
PRODUCTION_TOKEN_LIFETIME = 3600.0
OTHER_TOKEN_LIFETIME = 86400.0


MIN_JWT_SECRET_BYTES = 32
MAKE_A_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


def token_rules(env: Mapping[str, str]) -> TokenRules:
    production = env.get("COURIER_ENV", "").strip().lower() == PRODUCTION
    default = PRODUCTION_TOKEN_LIFETIME if production else OTHER_TOKEN_LIFETIME
    max_lifetime = _float(env, "JWT_MAX_LIFETIME_SECONDS", default)
    if max_lifetime <= 0:
        raise SettingsError(f"JWT_MAX_LIFETIME_SECONDS must be more than 0, got {max_lifetime:g}")
    return TokenRules(
        issuer=env.get("JWT_ISSUER", "").strip() or None,
        audience=env.get("JWT_AUDIENCE", "").strip() or None,
        max_lifetime=max_lifetime,
    )


def _check_jwt_secret(secret: str) -> None:
    size = len(secret.encode("utf-8"))
    if size < MIN_JWT_SECRET_BYTES:
        raise SettingsError(
            f"JWT_SECRET is {size} bytes long; an HS256 secret must be at least "
            f"{MIN_JWT_SECRET_BYTES} bytes of randomness. Make one with: {MAKE_A_SECRET}"
        )


def jwt_algorithm(public_key_pem: str) -> str:
    """The one algorithm tokens signed by the identity provider's key may use: RS256 for
    an RSA key, EdDSA for an Ed25519 key (never chosen by the token's own header)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(public_key_pem.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeError):
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise SettingsError(f"JWT_PUBLIC_KEY: an RSA key of {key.key_size} bits is too weak")
        return "RS256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SettingsError(
        "JWT_PUBLIC_KEY (or the file JWT_PUBLIC_KEY_FILE names) must be a PEM public key "
        "(-----BEGIN PUBLIC KEY-----) of RSA, for RS256, or Ed25519, for EdDSA"
    )


def _jwt_public_key(env: Mapping[str, str]) -> str | None:
    inline, path = env.get("JWT_PUBLIC_KEY") or "", env.get("JWT_PUBLIC_KEY_FILE") or ""
    if inline and path:
        raise SettingsError("set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both")
    if path:
        try:
            inline = Path(path).read_text()
        except OSError as error:
            raise SettingsError(f"JWT_PUBLIC_KEY_FILE {path!r} cannot be read: {error}") from None
    if not inline:
        return None
    jwt_algorithm(inline)
    return inline


@dataclass(frozen=True)
class Limits:
    """What one client may send (docs/SECURITY.md, "Hostile input"): ``HTTP_*``, ``WS_*``,
    ``RATE_LIMIT_*``, ``JWT_LEEWAY_SECONDS``. A rate limit of 0 is off."""

    max_body_bytes: int = 1024 * 1024
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    ws_max_frame_bytes: int = 64 * 1024
    ws_frames_per_second: int = 50
    rate_per_user: int = 600
    rate_per_address: int = 3000
    rate_window: float = 60.0
    jwt_leeway: float = 30.0
    cors_origins: tuple[str, ...] = ()


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path:
            raise SettingsError(
                "CORS_ORIGINS must be a comma-separated list of origins such as "
                f"https://app.example.org (scheme and host, no path), got {origin!r}"
            )
    return origins


def _ws_origins(raw: str) -> tuple[str, ...]:
    """``WS_ALLOWED_ORIGINS``: exact origins (as ``CORS_ORIGINS``), or ``*`` for any."""
    if raw.strip() == "*":
        return ("*",)
    try:
        return _origins(raw)
    except SettingsError:
        raise SettingsError(
            "WS_ALLOWED_ORIGINS must be * or a comma-separated list of origins such as "
            "https://app.example.org (scheme and host, no path)"
        ) from None


def limits(env: Mapping[str, str], max_content_bytes: int) -> Limits:
    """The request, WebSocket and rate limits; the body cap fits the largest message."""
    d = Limits()
    body_floor = max(d.max_body_bytes, 6 * max_content_bytes + 64 * 1024)
    return Limits(
        max_body_bytes=max(1024, _int(env, "MAX_BODY_BYTES", body_floor)),
        max_header_bytes=max(4096, _int(env, "HTTP_MAX_HEADER_BYTES", d.max_header_bytes)),
        header_timeout=max(0.1, _float(env, "HTTP_HEADER_TIMEOUT_SECONDS", d.header_timeout)),
        body_timeout=max(0.1, _float(env, "HTTP_BODY_TIMEOUT_SECONDS", d.body_timeout)),
        ws_max_frame_bytes=max(1024, _int(env, "WS_MAX_FRAME_BYTES", d.ws_max_frame_bytes)),
        ws_frames_per_second=max(1, _int(env, "WS_MAX_FRAMES_PER_SECOND", d.ws_frames_per_second)),
        rate_per_user=max(0, _int(env, "RATE_LIMIT_PER_USER", d.rate_per_user)),
        rate_per_address=max(0, _int(env, "RATE_LIMIT_PER_ADDRESS", d.rate_per_address)),
        rate_window=max(1.0, _float(env, "RATE_LIMIT_WINDOW_SECONDS", d.rate_window)),
        jwt_leeway=max(0.0, _float(env, "JWT_LEEWAY_SECONDS", d.jwt_leeway)),
        cors_origins=_origins(env.get("CORS_ORIGINS", "")),
    )


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    redis_url: str | None
    jwt_secret: str
    jwt_public_key: str | None
    master_keys: str
    queues: dict[str, QueueSettings]
    max_content_bytes: int
    retention_days: int
    fault_inject: str
    data_dir: Path
    ws_send_queue: int = 256
    ws_idle_seconds: float = 120.0
    ws_max_per_user: int = 16
    # Origins whose pages may open the WebSocket; empty: the page's own (and CORS_ORIGINS).
    ws_allowed_origins: tuple[str, ...] = ()
    ws_ticket_seconds: int = 30  # a WebSocket ticket's life (single use)
    poll_interval: float = 0.05
    reconcile_after: float = 60.0
    visibility_timeout: float = 660.0
    background_nice: int = 10  # worker, relay, projections yield the CPU to the API
    lock_timeout: int = 2  # s a PostgreSQL statement waits for a lock (0: forever)
    idle_in_transaction_timeout: int = 5  # s before the server ends a stalled transaction
    extra: dict[str, str] = field(default_factory=dict)
    health: HealthRules = field(default_factory=HealthRules)
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    job_runs_retention_days: float = 7.0
    retention_interval: float = 3600.0
    audit_checkpoint_seconds: float = 300.0  # the projections process signs the chain (0: never)
    audit_verify_full_seconds: float = 900.0  # GET /api/audit/verify re-walks everything
    limits: Limits = field(default_factory=Limits)
    tokens: TokenRules = field(default_factory=TokenRules)
    require_encryption: bool = False  # REQUIRE_ENCRYPTION: plain-text sends answer 422

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))

    def sqlalchemy_url(self) -> str:
        """The read side's URL (on SQLite a file beside the event store)."""
        if self.is_postgres:
            return "postgresql+psycopg://" + self.database_url.split("://", 1)[1]
        return f"sqlite:///{self.sqlite_path().with_suffix('.read.db')}"

    def sqlite_path(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    def eventstore_env(self) -> dict[str, str]:
        """eventsourcing's own keys for the chosen store, and its at-rest cipher if set."""
        env = self._store_env()
        cipher_key = self.extra.get(EVENT_STORE_CIPHER_KEY)
        if cipher_key:
            env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
            env["CIPHER_KEY"] = cipher_key
        return env

    def database_params(self) -> dict[str, str]:
        """libpq parameters from ``DATABASE_URL``'s query (``sslmode``, ``sslrootcert``, …)."""
        return dict(parse_qsl(urlparse(self.database_url).query))

    def _store_env(self) -> dict[str, str]:
        if self.is_postgres:
            p = urlparse(self.database_url)
            env = {
                # eventsourcing's PostgreSQL store, with the URL's query as libpq parameters
                "PERSISTENCE_MODULE": PG_STORE_FACTORY,
                "POSTGRES_DBNAME": p.path.lstrip("/") or "postgres",
                "POSTGRES_HOST": p.hostname or "127.0.0.1",
                "POSTGRES_PORT": str(p.port or 5432),
                "POSTGRES_USER": unquote(p.username or "postgres"),
                "POSTGRES_PASSWORD": unquote(p.password or ""),
                "POSTGRES_POOL_SIZE": self.extra.get("POSTGRES_POOL_SIZE", "4"),
                "POSTGRES_MAX_OVERFLOW": self.extra.get("POSTGRES_MAX_OVERFLOW", "8"),
                "POSTGRES_IDLE_CONNECTION_TIMEOUT": "30",
                "POSTGRES_CONNECT_TIMEOUT": "5",
                # whole seconds, as eventsourcing reads them
                "POSTGRES_LOCK_TIMEOUT": str(self.lock_timeout),
                "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": str(
                    self.idle_in_transaction_timeout
                ),
            }
            if p.query:
                env[CONNECT_PARAMS] = urlencode(self.database_params())
            if self.extra.get("POSTGRES_SCHEMA"):
                env["POSTGRES_SCHEMA"] = self.extra["POSTGRES_SCHEMA"]
            return env
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(self.sqlite_path()),
            "SQLITE_LOCK_TIMEOUT": "30",
        }


EVENT_STORE_CIPHER_KEY = "EVENT_STORE_CIPHER_KEY"
PG_STORE_FACTORY = "infrastructure.pgstore:Factory"
CONNECT_PARAMS = "POSTGRES_CONNECT_PARAMS"  # read by infrastructure.pgstore
PRODUCTION = "production"
# libpq's sslmode values from weakest to strongest; only verify-full checks the host name.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _timeout_seconds(env: Mapping[str, str], key: str, default: int) -> int:
    value = _int(env, key, default)
    if value < 0:
        raise SettingsError(f"{key} must be whole seconds, 0 or more (0: no limit), got {value}")
    return value


def _check_database_tls(env: Mapping[str, str], database_url: str) -> None:
    """With ``COURIER_ENV=production``, PostgreSQL only over TLS that checks the server."""
    if not database_url.startswith(("postgresql://", "postgres://")):
        return
    sslmode = dict(parse_qsl(urlparse(database_url).query)).get("sslmode")
    sslmode = sslmode or env.get("PGSSLMODE") or "prefer"  # libpq's own default
    if sslmode not in SSLMODES:
        raise SettingsError(
            f"DATABASE_URL has sslmode={sslmode!r}; libpq knows {', '.join(SSLMODES)}"
        )
    if env.get("COURIER_ENV", "").strip().lower() != PRODUCTION or sslmode == "verify-full":
        return
    if env.get("ALLOW_INSECURE_DATABASE", "").strip().lower() in ("1", "true", "yes"):
        return
    raise SettingsError(
        f"DATABASE_URL connects with sslmode={sslmode}, which does not check the server's "
        "certificate and host name, and COURIER_ENV=production refuses it: add "
        "?sslmode=verify-full&sslrootcert=/path/to/ca.pem to DATABASE_URL (docs/DEPLOYMENT.md, "
        "TLS), or set ALLOW_INSECURE_DATABASE=1 to accept it knowingly (e.g. a Unix socket)"
    )


def _check_cipher_key(value: str) -> None:
    """The optional at-rest cipher of the event store: base64 of 16, 24 or 32 bytes."""
    if not value:
        return
    try:
        size = len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        size = -1
    if size not in (16, 24, 32):
        raise SettingsError(
            f"{EVENT_STORE_CIPHER_KEY} must be base64 of a 16, 24 or 32-byte key "
            "(`courier keys generate --event-store` prints one)"
        )


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a whole number, got {raw!r}") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from None


def queue_settings(env: Mapping[str, str]) -> dict[str, QueueSettings]:
    """The documented defaults (docs/API.md §8), each overridable by ``QUEUE_<NAME>_<SETTING>``."""
    result = {}
    for name in QUEUES:
        d = DEFAULT_QUEUE_SETTINGS[name]
        prefix = f"QUEUE_{name}_"
        backoff = env.get(prefix + "BACKOFF", d.backoff)
        if backoff not in ("exponential", "fixed"):
            raise SettingsError(f"{prefix}BACKOFF must be 'exponential' or 'fixed'")
        result[name] = QueueSettings(
            name=name,
            concurrency=max(1, _int(env, prefix + "CONCURRENCY", d.concurrency)),
            max_attempts=max(1, _int(env, prefix + "MAX_ATTEMPTS", d.max_attempts)),
            backoff=backoff,
            backoff_seconds=_float(env, prefix + "BACKOFF_SECONDS", d.backoff_seconds),
            timeout_seconds=_float(env, prefix + "TIMEOUT_SECONDS", d.timeout_seconds),
        )
    return result


def _secret_file(path: Path, make: str) -> str:
    """A secret kept under the data dir for the embedded default, made on first start."""
    return secret_file(path, lambda: make)


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in a file of its own: read, or made and written to a file that is
    0600 from its creation (never readable by others, not even for a moment); of two
    processes making it at once, the second keeps the first one's."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting once. With nothing set: the embedded default under ./var/."""
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("COURIER_DATA_DIR", "var")).resolve()
    database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'courier.db'}"
    if not database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise SettingsError(
            "DATABASE_URL must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB, "
            f"got {database_url.split('://')[0]}://…"
        )
    embedded = database_url.startswith("sqlite")
    if embedded:
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    jwt_secret = env.get("JWT_SECRET") or ""
    jwt_public_key = _jwt_public_key(env)
    master_keys = env.get("ENCRYPTION_MASTER_KEYS") or ""
    if embedded:
        jwt_secret = jwt_secret or _secret_file(data_dir / "jwt-secret", secrets.token_urlsafe(48))
        if not master_keys:
            from infrastructure.crypto import generate_master_key_spec

            master_keys = _secret_file(data_dir / "master-keys", generate_master_key_spec())
    else:
        if not jwt_secret and not jwt_public_key:
            raise SettingsError(
                "JWT_SECRET is missing, and has no default outside the embedded runtime: "
                f"set it to at least {MIN_JWT_SECRET_BYTES} random bytes shared by every API "
                f"process ({MAKE_A_SECRET})"
            )
        if not master_keys:
            raise SettingsError(
                "ENCRYPTION_MASTER_KEYS is missing, and has no default outside the embedded "
                "runtime: run `courier keys generate` and share the value with every process"
            )
    if jwt_secret or not jwt_public_key:
        _check_jwt_secret(jwt_secret)
    _check_cipher_key(env.get(EVENT_STORE_CIPHER_KEY, ""))
    _check_database_tls(env, database_url)
    max_content_bytes = _int(env, "MAX_CONTENT_BYTES", 65536)
    passthrough = (
        "POSTGRES_SCHEMA",
        "POSTGRES_POOL_SIZE",
        "POSTGRES_MAX_OVERFLOW",
        "COURIER_ROLE",
        EVENT_STORE_CIPHER_KEY,
        "AUDIT_SIGNING_KEY",
        "AUDIT_PUBLIC_KEY",
        "DATABASE_APP_ROLE",
    )
    return Settings(
        database_url=database_url,
        broker_url=env.get("BROKER_URL") or "memory://",
        redis_url=env.get("REDIS_URL") or None,
        jwt_secret=jwt_secret,
        jwt_public_key=jwt_public_key,
        master_keys=master_keys,
        queues=queue_settings(env),
        max_content_bytes=max_content_bytes,
        retention_days=_int(env, "RETENTION_DAYS", 0),
        fault_inject=env.get("FAULT_INJECT", ""),
        data_dir=data_dir,
        ws_send_queue=_int(env, "WS_SEND_QUEUE", 256),
        ws_idle_seconds=_float(env, "WS_IDLE_SECONDS", 120.0),
        ws_max_per_user=max(1, _int(env, "WS_MAX_PER_USER", 16)),
        ws_allowed_origins=_ws_origins(env.get("WS_ALLOWED_ORIGINS", "")),
        ws_ticket_seconds=min(300, max(1, _int(env, "WS_TICKET_SECONDS", 30))),
        poll_interval=_float(env, "COURIER_POLL_INTERVAL", 0.05),
        background_nice=min(19, max(0, _int(env, "BACKGROUND_NICE", 10))),
        lock_timeout=_timeout_seconds(env, "POSTGRES_LOCK_TIMEOUT", 2),
        idle_in_transaction_timeout=_timeout_seconds(
            env, "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT", 5
        ),
        reconcile_after=_float(env, "RECONCILE_AFTER_SECONDS", 60.0),
        visibility_timeout=_float(env, "BROKER_VISIBILITY_TIMEOUT", 660.0),
        extra={k: env[k] for k in passthrough if env.get(k)},
        health=HealthRules(
            stall_seconds=_float(env, "QUEUE_HEALTH_STALL_SECONDS", 60.0),
            failure_rate=_float(env, "QUEUE_HEALTH_FAILURE_RATE", 0.2),
            min_attempts=_int(env, "QUEUE_HEALTH_MIN_ATTEMPTS", 5),
        ),
        job_runs_retention_days=_float(env, "JOB_RUNS_RETENTION_DAYS", 7.0),
        retention_interval=_float(env, "RETENTION_INTERVAL_SECONDS", 3600.0),
        audit_checkpoint_seconds=max(0.0, _float(env, "AUDIT_CHECKPOINT_SECONDS", 300.0)),
        audit_verify_full_seconds=max(0.0, _float(env, "AUDIT_VERIFY_FULL_SECONDS", 900.0)),
        notifications=notification_settings(env),
        limits=limits(env, max_content_bytes),
        tokens=token_rules(env),
        require_encryption=flag(env, "REQUIRE_ENCRYPTION"),
    )
