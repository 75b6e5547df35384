"""The settings that belong together: notification providers, token rules, client limits,
queue health and the queues' own settings. Each field is read from the environment
variable its ``validation_alias`` names, and has its one default here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from application.jobs import DEFAULT_QUEUE_SETTINGS, QUEUES, QueueSettings
from infrastructure.settings.values import (
    TRUE,
    Flag,
    Number,
    SettingsError,
    Whole,
    at_least,
    origins,
    parse_number,
    parse_whole,
    read,
    stripped,
)


class Group(BaseModel):
    """Settings read from a flat environment by their variables' names (or built in code
    by their field names)."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True
    )


class HealthRules(Group):
    """When a queue is degraded (docs/QUEUES.md): ``QUEUE_HEALTH_*``."""

    # jobs wait and none has started for this long
    stall_seconds: Number = Field(default=60.0, validation_alias="QUEUE_HEALTH_STALL_SECONDS")
    # failed attempts / finished attempts over 5 minutes
    failure_rate: Number = Field(default=0.2, validation_alias="QUEUE_HEALTH_FAILURE_RATE")
    # fewer finished attempts than this: no failure-rate verdict
    min_attempts: Whole = Field(default=5, validation_alias="QUEUE_HEALTH_MIN_ATTEMPTS")


# The URL settings of the providers, and the schemes each may have.
URL_SCHEMES = {
    "SMTP_URL": ("smtp", "smtps"),
    "PUSH_WEBHOOK_URL": ("http", "https"),
    "SMS_API_URL": ("http", "https"),
}


class NotificationSettings(Group):
    """Notification providers (docs/REALTIME.md); a channel without one is skipped."""

    # smtp://[user:pass@]host[:port]; the password makes the whole URL a secret
    smtp_url: SecretStr | None = Field(default=None, validation_alias="SMTP_URL")
    smtp_allow_plaintext: Flag = Field(default=False, validation_alias="SMTP_ALLOW_PLAINTEXT")
    smtp_from: str = Field(
        default="Courier <no-reply@courier.invalid>", validation_alias="SMTP_FROM"
    )
    # receives FCM HTTP v1 shaped JSON
    push_webhook_url: str | None = Field(default=None, validation_alias="PUSH_WEBHOOK_URL")
    push_webhook_token: SecretStr | None = Field(
        default=None, validation_alias="PUSH_WEBHOOK_TOKEN"
    )
    sms_api_url: str | None = Field(
        default=None, validation_alias="SMS_API_URL"
    )  # POST {base}/messages
    sms_api_key: SecretStr | None = Field(default=None, validation_alias="SMS_API_KEY")
    sms_from: str = Field(default="Courier", validation_alias="SMS_FROM")
    timeout_seconds: Number = Field(default=5.0, validation_alias="NOTIFY_TIMEOUT_SECONDS")
    # plain messages' text in notifications
    preview: Flag = Field(default=False, validation_alias="NOTIFY_PREVIEW")

    @model_validator(mode="before")
    @classmethod
    def _check_schemes(cls, env: Any) -> Any:
        for key, allowed in URL_SCHEMES.items():
            value = env.get(key) if isinstance(env, Mapping) else None
            if not isinstance(value, str) or not value:
                continue
            parsed = urlparse(value)
            if parsed.scheme not in allowed or not parsed.hostname:
                raise SettingsError(
                    f"{key} must be a URL starting with {' or '.join(s + '://' for s in allowed)}"
                )
        return env

    @model_validator(mode="after")
    def _check_smtp_tls(self) -> NotificationSettings:
        """Mail leaves the host: ``smtp://`` without STARTTLS only when explicitly allowed."""
        url = self.smtp_url.get_secret_value() if self.smtp_url else ""
        if urlparse(url).scheme != "smtp" or smtp_starttls(url) or self.smtp_allow_plaintext:
            return self
        raise SettingsError(
            "SMTP_URL is smtp:// without STARTTLS: mail, and the SMTP password, would cross "
            "the network in plain text. Use smtps://host:465, or add ?starttls=1 (port 587), "
            "or set SMTP_ALLOW_PLAINTEXT=1 to accept it knowingly (e.g. a relay on localhost)"
        )


def notification_settings(env: Mapping[str, str]) -> NotificationSettings:
    """``SMTP_*``, ``PUSH_WEBHOOK_*``, ``SMS_*``, ``NOTIFY_*`` from ``env`` alone."""
    return read(NotificationSettings, env)


def smtp_starttls(url: str) -> bool:
    """Whether an ``smtp://`` URL asks for STARTTLS (``?starttls=1``)."""
    value = parse_qs(urlparse(url).query).get("starttls", ["0"])[0]
    return value.strip().lower() in TRUE


# ``JWT_MAX_LIFETIME_SECONDS`` when unset: an hour under ``COURIER_ENV=production``; a day
# elsewhere (development, tests, benchmarks), where tools mint tokens for a whole run.
PRODUCTION_TOKEN_LIFETIME = 3600.0
OTHER_TOKEN_LIFETIME = 86400.0
PRODUCTION = "production"

Trimmed = Annotated[str | None, BeforeValidator(stripped)]


def is_production(env: Mapping[str, Any]) -> bool:
    return str(env.get("COURIER_ENV", "")).strip().lower() == PRODUCTION


class TokenRules(Group):
    """What a bearer token must also say (docs/SECURITY.md, "Access"): ``JWT_ISSUER``,
    ``JWT_AUDIENCE`` (checked when set) and ``JWT_MAX_LIFETIME_SECONDS`` (``exp - iat``)."""

    issuer: Trimmed = Field(default=None, validation_alias="JWT_ISSUER")
    audience: Trimmed = Field(default=None, validation_alias="JWT_AUDIENCE")
    max_lifetime: Number = Field(
        default=PRODUCTION_TOKEN_LIFETIME, validation_alias="JWT_MAX_LIFETIME_SECONDS"
    )

    @model_validator(mode="before")
    @classmethod
    def _lifetime_outside_production(cls, env: Any) -> Any:
        given = isinstance(env, Mapping) and ({"max_lifetime", "JWT_MAX_LIFETIME_SECONDS"} & {*env})
        if not isinstance(env, Mapping) or given or is_production(env):
            return env
        return {**env, "JWT_MAX_LIFETIME_SECONDS": OTHER_TOKEN_LIFETIME}

    @model_validator(mode="after")
    def _check_lifetime(self) -> TokenRules:
        if self.max_lifetime <= 0:
            raise SettingsError(
                f"JWT_MAX_LIFETIME_SECONDS must be more than 0, got {self.max_lifetime:g}"
            )
        return self


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


def _comma_separated_origins(raw: object) -> object:
    return origins(raw) if isinstance(raw, str) else raw


class Limits(Group):
    """What one client may send (docs/SECURITY.md, "Hostile input"): ``HTTP_*``, ``WS_*``,
    ``RATE_LIMIT_*``, ``JWT_LEEWAY_SECONDS``. A rate limit of 0 is off."""

    # Settings raises it to fit the largest message when MAX_BODY_BYTES is unset.
    max_body_bytes: Annotated[Whole, at_least(1024)] = Field(
        default=1024 * 1024, validation_alias="MAX_BODY_BYTES"
    )
    max_header_bytes: Annotated[Whole, at_least(4096)] = Field(
        default=32 * 1024, validation_alias="HTTP_MAX_HEADER_BYTES"
    )
    header_timeout: Annotated[Number, at_least(0.1)] = Field(
        default=10.0, validation_alias="HTTP_HEADER_TIMEOUT_SECONDS"
    )
    body_timeout: Annotated[Number, at_least(0.1)] = Field(
        default=30.0, validation_alias="HTTP_BODY_TIMEOUT_SECONDS"
    )
    ws_max_frame_bytes: Annotated[Whole, at_least(1024)] = Field(
        default=64 * 1024, validation_alias="WS_MAX_FRAME_BYTES"
    )
    ws_frames_per_second: Annotated[Whole, at_least(1)] = Field(
        default=50, validation_alias="WS_MAX_FRAMES_PER_SECOND"
    )
    rate_per_user: Annotated[Whole, at_least(0)] = Field(
        default=600, validation_alias="RATE_LIMIT_PER_USER"
    )
    rate_per_address: Annotated[Whole, at_least(0)] = Field(
        default=3000, validation_alias="RATE_LIMIT_PER_ADDRESS"
    )
    rate_window: Annotated[Number, at_least(1.0)] = Field(
        default=60.0, validation_alias="RATE_LIMIT_WINDOW_SECONDS"
    )
    jwt_leeway: Annotated[Number, at_least(0.0)] = Field(
        default=30.0, validation_alias="JWT_LEEWAY_SECONDS"
    )
    cors_origins: Annotated[tuple[str, ...], BeforeValidator(_comma_separated_origins)] = Field(
        default=(), validation_alias="CORS_ORIGINS"
    )


# Each queue's settings are QUEUE_<NAME>_<SETTING> (docs/API.md §8).
QUEUE_SETTINGS = ("CONCURRENCY", "MAX_ATTEMPTS", "BACKOFF", "BACKOFF_SECONDS", "TIMEOUT_SECONDS")


def queue_settings(env: Mapping[str, str]) -> dict[str, QueueSettings]:
    """The documented defaults (application/jobs.py), each overridable by
    ``QUEUE_<NAME>_<SETTING>``."""

    def value(key: str, parse: Any, default: Any) -> Any:
        raw = env.get(key) or None
        try:
            return default if raw is None else parse(raw)
        except ValueError as error:
            raise SettingsError(f"{key} {error}") from None

    result = {}
    for name in QUEUES:
        d = DEFAULT_QUEUE_SETTINGS[name]
        prefix = f"QUEUE_{name}_"
        backoff = env.get(prefix + "BACKOFF") or d.backoff
        if backoff not in ("exponential", "fixed"):
            raise SettingsError(f"{prefix}BACKOFF must be 'exponential' or 'fixed'")
        result[name] = QueueSettings(
            name=name,
            concurrency=max(1, value(prefix + "CONCURRENCY", parse_whole, d.concurrency)),
            max_attempts=max(1, value(prefix + "MAX_ATTEMPTS", parse_whole, d.max_attempts)),
            backoff=backoff,
            backoff_seconds=value(prefix + "BACKOFF_SECONDS", parse_number, d.backoff_seconds),
            timeout_seconds=value(prefix + "TIMEOUT_SECONDS", parse_number, d.timeout_seconds),
        )
    return result
