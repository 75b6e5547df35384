"""Sealing content: by the service (AES-256-GCM, its data key wrapped by the keyring),
or by the client (its wrapped keys checked and kept), and the envelope a participant
fetches to open it."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from application.errors import ContentShredded, Invalid, NotFound, NotReady
from application.keys import KeyRegistry
from application.outgoing import Outgoing, Participants
from application.ports import (
    SERVICE_KEY,
    USER_KEY,
    VaultEntry,
    message_key_context,
)
from application.reads import Reads
from application.search import blind_words
from domain.access import ENVELOPE, Access
from domain.conversation import Conversation
from domain.events import Context
from domain.ids import new_id
from domain.message import ENVELOPE_VERSION

SERVICE_HOLDER = "service"
SHREDDED = (
    "this message's content key was destroyed (shredded): its content cannot be read any more"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def aad_for(message_id: UUID) -> bytes:
    return f"courier:message:{message_id}:{ENVELOPE_VERSION}".encode()


@dataclass(frozen=True)
class Envelope:
    """A message's sealed content (AES-256-GCM, base64 parts as sealed) and its data key
    wrapped for one participant's public key (RSA-OAEP-256)."""

    message_id: UUID
    ciphertext: str | None
    iv: str | None
    auth_tag: str | None
    aad: str | None
    wrapped_key: bytes
    recipient_key_id: str
    encryption_version: str | None


class Sealing(KeyRegistry, Reads):
    """Content sealed by the service, or checked as the client sealed it; envelopes."""

    def _search_tokens(self, tenant_id: str, outgoing: Outgoing) -> list[str] | None:
        """Blind-index tokens of a server-sealed message, made while its plaintext is here."""
        index = self.crypto.blind_index
        if index is None or not outgoing.index or outgoing.content is None:
            return None
        return index.tokens(tenant_id, blind_words(outgoing.content))

    def _server_seal(self, mid: UUID, content: str) -> tuple[dict[str, Any], list[VaultEntry]]:
        sealed = self.crypto.cipher.seal(content.encode("utf-8"), aad_for(mid))
        dek_id = new_id().hex
        holder = f"{SERVICE_HOLDER}:{dek_id}"
        key_id, wrapped = self.crypto.keyring.wrap(
            sealed.data_key, message_key_context(mid, holder)
        )
        entry = VaultEntry(mid, holder, key_id, wrapped, SERVICE_KEY)
        envelope = {
            "ciphertext": b64(sealed.ciphertext),
            "iv": b64(sealed.iv),
            "authTag": b64(sealed.auth_tag),
            "aad": b64(sealed.aad),
            "dekId": dek_id,
            "serviceKeyId": key_id,
        }
        return envelope, [entry]

    def _client_sealed(
        self,
        ctx: Context,
        mid: UUID,
        conversation: Participants | Conversation,
        sealed: dict[str, Any],
    ) -> tuple[dict[str, Any], list[VaultEntry]]:
        wrapped: dict[str, str] = sealed["wrappedKeys"]
        missing = [p for p in conversation.participant_ids if p not in wrapped]
        strangers = [u for u in wrapped if u not in conversation.participant_ids]
        if missing or strangers:
            raise Invalid(
                "sealed.wrappedKeys must hold a wrapped key for every participant, "
                "and for nobody else",
                [
                    *(
                        {"field": "sealed.wrappedKeys", "issue": f"missing for {user}"}
                        for user in missing
                    ),
                    *(
                        {"field": "sealed.wrappedKeys", "issue": f"{user} is not a participant"}
                        for user in strangers
                    ),
                ],
            )
        entries = []
        for user in conversation.participant_ids:
            key_id = self._current_key_id(ctx.tenant_id, user) or "client"
            entries.append(VaultEntry(mid, user, key_id, unb64(wrapped[user]), USER_KEY))
        envelope: dict[str, Any] = {
            k: sealed[k] for k in ("ciphertext", "iv", "authTag") if k in sealed
        }
        if sealed.get("aad") is not None:
            envelope["aad"] = sealed["aad"]
        return envelope, entries

    def envelope(self, ctx: Context, message_id: UUID) -> Envelope:
        """The sealed content with its data key wrapped for the caller (docs/API.md §4.2, §9).

        Only the message's sender and recipients hold a wrapped key; fetching one is
        recorded as an ``Access`` record (``Viewed``) of the envelope.
        """
        message = self.visible_message(ctx, message_id)
        if not message.encrypted:
            raise NotFound("this message is not encrypted, so it has no envelope")
        entry = (
            None if message.shredded else self.crypto.vault.get(message.id, USER_KEY, ctx.actor_id)
        )
        if entry is None:
            if message.encryption is None and not message.shredded:
                raise NotReady(
                    "the message is still being encrypted; ask again once its status is encrypted"
                )
            # Keys are written before Encrypted is recorded: none now means destroyed.
            raise ContentShredded(SHREDDED)
        self.save(Access.viewed(ctx.as_meta(), ENVELOPE, None, [str(message.id)]))
        sealed = message.sealed or {}
        return Envelope(
            message_id=message.id,
            ciphertext=sealed.get("ciphertext"),
            iv=sealed.get("iv"),
            auth_tag=sealed.get("authTag"),
            aad=sealed.get("aad"),
            wrapped_key=entry.wrapped_key,
            recipient_key_id=entry.key_id,
            encryption_version=message.encryption_version,
        )
