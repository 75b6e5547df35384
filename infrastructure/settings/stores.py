"""What the stores' settings must be: the database's TLS, the event store's cipher key."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qsl, urlparse

from pydantic import SecretStr

from infrastructure.settings.values import SettingsError

# libpq's sslmode values from weakest to strongest; only verify-full checks the host name.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def database_params(database_url: str) -> dict[str, str]:
    """libpq parameters from ``DATABASE_URL``'s query (``sslmode``, ``sslrootcert``, …)."""
    return dict(parse_qsl(urlparse(database_url).query))


def check_database_tls(
    database_url: str, pgsslmode: str | None, production: bool, allow_insecure: bool
) -> None:
    """With ``COURIER_ENV=production``, PostgreSQL only over TLS that checks the server."""
    if not database_url.startswith(("postgresql://", "postgres://")):
        return
    sslmode = database_params(database_url).get("sslmode")
    sslmode = sslmode or pgsslmode or "prefer"  # libpq's own default
    if sslmode not in SSLMODES:
        raise SettingsError(
            f"DATABASE_URL has sslmode={sslmode!r}; libpq knows {', '.join(SSLMODES)}"
        )
    if not production or sslmode == "verify-full" or allow_insecure:
        return
    raise SettingsError(
        f"DATABASE_URL connects with sslmode={sslmode}, which does not check the server's "
        "certificate and host name, and COURIER_ENV=production refuses it: add "
        "?sslmode=verify-full&sslrootcert=/path/to/ca.pem to DATABASE_URL (docs/DEPLOYMENT.md, "
        "TLS), or set ALLOW_INSECURE_DATABASE=1 to accept it knowingly (e.g. a Unix socket)"
    )


def check_cipher_key(value: SecretStr | None) -> SecretStr | None:
    """The optional at-rest cipher of the event store: base64 of 16, 24 or 32 bytes."""
    if value is None:
        return None
    try:
        size = len(base64.b64decode(value.get_secret_value(), validate=True))
    except (binascii.Error, ValueError):
        size = -1
    if size not in (16, 24, 32):
        raise SettingsError(
            "EVENT_STORE_CIPHER_KEY must be base64 of a 16, 24 or 32-byte key "
            "(`courier keys generate --event-store` prints one)"
        )
    return value
