"""Secrets kept in files of their own: the embedded default's generated JWT secret and
master keyring under the data dir, made on a process's first start (``courier serve``
with nothing set keeps working, and keeps its keys across restarts)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from infrastructure.crypto import generate_master_key_spec
from infrastructure.settings import Settings, check_jwt_secret

JWT_SECRET_FILE = "jwt-secret"
MASTER_KEYS_FILE = "master-keys"


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


def with_embedded_secrets(settings: Settings) -> Settings:
    """On the embedded default: its SQLite directory, and the JWT secret and master keys
    not set in the environment, read from the data dir or made there on first start.
    Other settings are returned as they are."""
    if not settings.embedded:
        return settings
    settings.sqlite_path().parent.mkdir(parents=True, exist_ok=True)
    made: dict[str, SecretStr] = {}
    if settings.jwt_secret is None:
        jwt = secret_file(settings.data_dir / JWT_SECRET_FILE, lambda: secrets.token_urlsafe(48))
        check_jwt_secret(jwt)
        made["jwt_secret"] = SecretStr(jwt)
    if settings.master_keys is None:
        keys = secret_file(settings.data_dir / MASTER_KEYS_FILE, generate_master_key_spec)
        made["master_keys"] = SecretStr(keys)
    return settings.model_copy(update=made) if made else settings
