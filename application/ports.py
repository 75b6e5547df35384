"""What the application needs from the outside world, as Protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from application.jobs import Job


@dataclass(frozen=True)
class SealedContent:
    ciphertext: bytes
    iv: bytes
    auth_tag: bytes
    aad: bytes
    data_key: bytes


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    fingerprint: str
    bits: int


class InvalidPublicKey(ValueError):
    """A PEM that is not an RSA public key of the required strength."""


class Cipher(Protocol):
    def seal(self, plaintext: bytes, aad: bytes) -> SealedContent: ...
    def open(
        self, data_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
    ) -> bytes: ...
    def inspect_public_key(self, pem: str) -> PublicKeyInfo: ...
    def wrap_for(self, public_key_pem: str, data_key: bytes) -> bytes: ...


class Keyring(Protocol):
    """The service's master keys: the first is active, the others still unwrap."""

    @property
    def active_key_id(self) -> str: ...
    def wrap(self, data_key: bytes) -> tuple[str, bytes]: ...
    def unwrap(self, key_id: str, wrapped: bytes) -> bytes: ...
    def digest(self, data: bytes) -> str: ...


@dataclass(frozen=True)
class VaultEntry:
    message_id: UUID
    holder: str  # "service" or a user id
    key_id: str
    wrapped_key: bytes


class KeyVault(Protocol):
    """Wrapped data keys, kept outside the event log so that they can be destroyed."""

    def put(self, entries: list[VaultEntry]) -> None: ...
    def get(self, message_id: UUID, holder: str) -> VaultEntry | None: ...
    def shred(self, message_id: UUID) -> int: ...


class Presence(Protocol):
    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]: ...


class Notifier(Protocol):
    def notify(
        self, tenant_id: str, message_id: UUID, user_ids: list[str], encrypted: bool
    ) -> dict[str, dict[str, str]]: ...


class Indexer(Protocol):
    def index(self, message: Any) -> None: ...


class JobPublisher(Protocol):
    def publish(self, jobs: list[Job]) -> None: ...


class MessageQueries(Protocol):
    """The read side, as the interfaces see it (plain dicts, camelCase)."""

    def conversation_messages(
        self, tenant_id: str, conversation_id: UUID, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def delivered_since(
        self, tenant_id: str, user_id: str, since: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]: ...

    def search(
        self, tenant_id: str, user_id: str, query: str, conversation_id: UUID | None, limit: int
    ) -> list[dict[str, Any]]: ...
