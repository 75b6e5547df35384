"""What the application needs from the outside world, as Protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol
from uuid import UUID


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


class ContentCipher(Protocol):
    def seal(self, plaintext: bytes, aad: bytes) -> SealedContent: ...
    def open(
        self, data_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes
    ) -> bytes: ...
    def inspect_public_key(self, pem: str) -> PublicKeyInfo: ...
    def wrap_for(self, public_key_pem: str, data_key: bytes) -> bytes: ...


@dataclass(frozen=True)
class WrapFormat:
    """What tells a stored wrap of the keyring's current format from an older one: its
    first byte (the format's version), and the size of the oldest format, which has no
    version byte (a wrap of a 32-byte data key bound to nothing)."""

    version: bytes
    legacy_bytes: int

    def is_current(self, wrapped: bytes) -> bool:
        return len(wrapped) != self.legacy_bytes and wrapped[:1] == self.version


class KeyUnwrapError(Exception):
    """A wrapped key that does not unwrap: damaged, or wrapped for another context (a
    wrap copied from another row)."""


class Keyring(Protocol):
    """The service's master keys: the first is active, the others still unwrap."""

    @property
    def active_key_id(self) -> str: ...
    def holds(self, key_id: str) -> bool: ...
    @property
    def wrap_format(self) -> WrapFormat: ...
    def wrap(self, data_key: bytes, context: str) -> tuple[str, bytes]: ...
    def unwrap(self, key_id: str, wrapped: bytes, context: str) -> bytes:
        """The key ``wrap`` wrapped for ``context``; ``KeyUnwrapError`` if it cannot be."""
        ...

    def digest(self, data: bytes) -> str: ...


def message_key_context(message_id: UUID, holder: str) -> str:
    """What a message's data key wrapped by the keyring is bound to: purpose, message id
    and vault holder (``service:<data key id>``), so that it unwraps for no other row."""
    return f"message-data-key|message={message_id}|holder={holder}"


def index_key_context(tenant_id: str) -> str:
    """What a tenant's blind-index key wrapped by the keyring is bound to."""
    return f"search-index-key|tenant={tenant_id}"


# What a key-vault row holds, stored in a column of its own (``holder_type``), so that a
# row of one type never answers for another: a user id that reads ``service:...`` is not
# the service.
HolderType = Literal["user", "service", "digest", "search"]
USER_KEY: HolderType = "user"  # a data key wrapped for a user's public key (RSA-OAEP)
SERVICE_KEY: HolderType = "service"  # a data key wrapped by the service keyring
DIGEST_ROW: HolderType = "digest"
SEARCH_ROW: HolderType = "search"
HOLDER_TYPES: tuple[HolderType, ...] = (USER_KEY, SERVICE_KEY, DIGEST_ROW, SEARCH_ROW)


@dataclass(frozen=True)
class VaultEntry:
    message_id: UUID
    # USER_KEY: the user id. SERVICE_KEY: "service:<data key id>" (key_id: a master key
    # id). Or what must die with the message's keys (never in the event log): DIGEST_ROW,
    # DIGEST_HOLDER + the send's reference (the HMAC that tells a repeated clientMessageId
    # send from a different one); SEARCH_ROW, SEARCH_HOLDER [+ reference] (a server-sealed
    # message's blind-index tokens, one per line).
    holder: str
    key_id: str
    wrapped_key: bytes
    holder_type: HolderType


DIGEST_HOLDER = "digest:"
SEARCH_HOLDER = "search:"
# ``Message.Created.content_digest`` of a send with a clientMessageId: this prefix and the
# reference of its key-vault rows (events recorded before: the digest itself).
DIGEST_REF = "vault:"


def vault_reference(content_digest: str) -> str:
    """The reference of a message's key-vault rows, from its ``content_digest``."""
    return content_digest[len(DIGEST_REF) :] if content_digest.startswith(DIGEST_REF) else ""


def holds_key(holder_type: str) -> bool:
    """Whether a vault row of this type is a wrapped data key (not a digest or tokens)."""
    return holder_type in (USER_KEY, SERVICE_KEY)


class KeyVault(Protocol):
    """Wrapped data keys, kept outside the event log so that they can be destroyed."""

    def put(self, entries: list[VaultEntry]) -> None: ...
    def get(self, message_id: UUID, holder_type: HolderType, holder: str) -> VaultEntry | None: ...
    def get_many(
        self, holder_type: HolderType, wanted: list[tuple[UUID, str]]
    ) -> dict[tuple[UUID, str], VaultEntry]: ...
    def shred(self, message_id: UUID) -> int:
        """Delete every row of the message; how many were wrapped keys (``holds_key``)."""
        ...

    def entries_to_rewrap(
        self,
        holder_type: HolderType,
        key_id: str,
        current: WrapFormat,
        after: tuple[str, str] | None,
        limit: int,
    ) -> list[VaultEntry]:
        """Entries of ``holder_type`` whose key id is not
        ``key_id`` or whose wrapped key is not of the ``current`` format (an older one),
        ordered by (message id, holder), from just after ``after``."""
        ...

    def count_to_rewrap(self, holder_type: HolderType, key_id: str, current: WrapFormat) -> int: ...
    def count_outdated(self, holder_type: HolderType, current: WrapFormat) -> int:
        """Entries of ``holder_type`` whose wrapped key is not of the ``current`` format."""
        ...

    def count_by_key_id(self, holder_type: HolderType) -> dict[str, int]: ...

    def rewrap(self, entry: VaultEntry, key_id: str, wrapped_key: bytes) -> bool:
        """Replace ``entry``'s wrapped key if it is still as read; False if it changed
        or was shredded meanwhile (a shredded key is never brought back)."""
        ...


class Presence(Protocol):
    def online(self, tenant_id: str, user_ids: list[str]) -> set[str]: ...


@dataclass(frozen=True)
class Notice:
    """What a notification may say about a message: never an encrypted one's content."""

    tenant_id: str
    message_id: UUID
    conversation_id: UUID
    sender_id: str
    encrypted: bool
    preview: str | None  # the start of a plain message's text; None when encrypted


Outcomes = dict[str, dict[str, str]]  # user id → {channel: outcome}


Delivered = tuple[Notice, list[str], list[str]]  # a delivered batch: notice, offline, online


class Notifier(Protocol):
    def notify(self, notice: Notice, offline: list[str], online: list[str]) -> Outcomes:
        """Notify the recipients of one delivered batch; their outcomes, per channel.

        Raises when a provider failed for a reason that may pass (the job is retried);
        what was already sent is not sent again.
        """
        ...

    def notify_many(self, batch: list[Delivered]) -> list[Outcomes | Exception]:
        """``notify`` for many delivered batches at once: each one's outcomes or error."""
        ...


@dataclass(frozen=True)
class NotificationPreferences:
    """How a user wants to hear of messages while away, and where (personal data)."""

    channels: tuple[str, ...] = ()
    email: str | None = None
    phone: str | None = None
    push_token: str | None = None
    when_online: bool = False  # by default only offline recipients are notified


class ContactBook(Protocol):
    """Users' notification preferences and contact details, kept out of the event log
    so that they can be corrected and erased."""

    def get(self, tenant_id: str, user_id: str) -> NotificationPreferences | None: ...
    def many(self, tenant_id: str, user_ids: list[str]) -> dict[str, NotificationPreferences]: ...
    def put(self, tenant_id: str, user_id: str, preferences: NotificationPreferences) -> None: ...
    def delete(self, tenant_id: str, user_id: str) -> bool: ...


class BlindIndex(Protocol):
    """Keyed tokens of words under a per-tenant index key (never a content key)."""

    def tokens(self, tenant_id: str, words: list[str]) -> list[str]: ...


@dataclass
class Crypto:
    """What sealing, wrapping and searching encrypted content is done with."""

    cipher: ContentCipher
    keyring: Keyring
    vault: KeyVault
    blind_index: BlindIndex | None = None  # exact-word search over encrypted messages


class Indexer(Protocol):
    def index(self, message: Any) -> None: ...


class MessageQueries(Protocol):
    """The read side, as the interfaces see it (plain dicts, camelCase)."""

    def conversation_messages(
        self, tenant_id: str, user_id: str, conversation_id: UUID, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the conversation's messages that ``user_id`` sent or received, without
        others' scheduled (not begun) or cancelled sends."""
        ...

    def delivered_since(
        self, tenant_id: str, user_id: str, since: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]: ...

    def search(
        self, tenant_id: str, user_id: str, query: str, conversation_id: UUID | None, limit: int
    ) -> list[dict[str, Any]]: ...
