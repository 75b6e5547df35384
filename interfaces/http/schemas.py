"""Request bodies: strict, camelCase, nothing unknown (docs/API.md §1, §4)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from application.outgoing import Outgoing

USER_ID_PATTERN = r"^[A-Za-z0-9._@:+-]{1,128}$"
_USER_ID = re.compile(USER_ID_PATTERN.removeprefix("^").removesuffix("$"))
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def is_user_id(text: str) -> bool:
    return _USER_ID.fullmatch(text) is not None


def _base64(text: str) -> str:
    if len(text) % 4 or not _BASE64.fullmatch(text):
        raise PydanticCustomError("base64", "must be standard, padded base64")
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        raise PydanticCustomError("base64", "must be standard, padded base64") from None
    return text


def _decodes_to(size: int) -> AfterValidator:
    def check(text: str) -> str:
        if len(base64.b64decode(text)) != size:
            raise PydanticCustomError(
                "length", "must be {size} bytes, base64-encoded", {"size": size}
            )
        return text

    return AfterValidator(check)


def _uuid(text: str) -> str:
    try:
        return str(UUID(text))
    except ValueError:
        raise PydanticCustomError("uuid", "must be a UUID") from None


UserId = Annotated[str, StringConstraints(strict=True, pattern=USER_ID_PATTERN)]
Base64 = Annotated[
    str,
    StringConstraints(strict=True),
    AfterValidator(_base64),
    Field(json_schema_extra={"contentEncoding": "base64"}),
]
UuidText = Annotated[
    str,
    StringConstraints(strict=True, max_length=64),
    AfterValidator(_uuid),
    Field(json_schema_extra={"format": "uuid"}),
]


class Body(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, alias_generator=to_camel, frozen=True, validate_by_name=False
    )


class CreateConversation(Body):
    type: Literal["direct", "group"]
    participant_ids: list[UserId] = Field(min_length=1, max_length=5000)
    title: Annotated[str, StringConstraints(max_length=200)] | None = None


class AddParticipants(Body):
    user_ids: list[UserId] = Field(min_length=1, max_length=1000)


class Sealed(Body):
    """A message the client encrypted itself: the service never sees its key."""

    ciphertext: Base64
    iv: Annotated[Base64, StringConstraints(max_length=64), _decodes_to(12)]
    auth_tag: Annotated[Base64, StringConstraints(max_length=64), _decodes_to(16)]
    aad: Annotated[Base64, StringConstraints(max_length=4096)] | None = None
    wrapped_keys: dict[UserId, Annotated[Base64, StringConstraints(max_length=4096)]] = Field(
        min_length=1, max_length=5000
    )


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
MAX_SCHEDULE = timedelta(days=30)


def _send_at(text: str) -> str:
    """A future moment at most 30 days ahead, RFC 3339 with an offset; as UTC (``Z``)."""
    if not RFC3339.fullmatch(text):
        raise PydanticCustomError(
            "rfc3339", "must be an RFC 3339 date-time with an offset, e.g. 2030-01-31T09:00:00Z"
        )
    fraction = re.search(r"\.(\d+)", text)
    if fraction:  # fromisoformat takes at most six digits of a second
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6].ljust(6, "0"))
    try:
        when = datetime.fromisoformat(text.upper()).astimezone(UTC)
    except ValueError:
        raise PydanticCustomError("rfc3339", "is not a valid date-time") from None
    now = datetime.now(UTC)
    if when <= now:
        raise PydanticCustomError("send_at_past", "must be in the future")
    if when > now + MAX_SCHEDULE:
        raise PydanticCustomError("send_at_too_far", "must be at most 30 days ahead")
    return when.isoformat().replace("+00:00", "Z")


SendAt = Annotated[
    str,
    StringConstraints(strict=True, max_length=64),
    AfterValidator(_send_at),
    Field(json_schema_extra={"format": "date-time"}),
]


class Send(Body):
    content: Annotated[str, StringConstraints(min_length=1)] | None = None
    sealed: Sealed | None = None
    encrypted: bool = False
    notify: bool = True
    index: bool = True
    client_message_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    send_at: SendAt | None = None
    priority: Literal["high", "normal", "low"] = "normal"

    @model_validator(mode="after")
    def _one_content(self) -> Send:
        if (self.content is None) == (self.sealed is None):
            raise PydanticCustomError(
                "content_or_sealed",
                "send exactly one of content (plain text) or sealed (client-encrypted)",
                {"field": "content"},
            )
        if self.sealed is not None and "encrypted" in self.model_fields_set and not self.encrypted:
            raise PydanticCustomError(
                "sealed_is_encrypted",
                "a sealed message is encrypted: drop encrypted or set it to true",
                {"field": "encrypted"},
            )
        return self

    def content_bytes(self) -> int:
        """How big the message is: the UTF-8 text, or the sealed ciphertext."""
        if self.content is not None:
            return len(self.content.encode("utf-8"))
        assert self.sealed is not None
        text = self.sealed.ciphertext
        return len(text) // 4 * 3 - text[-2:].count("=")

    def outgoing(self) -> Outgoing:
        sealed: dict[str, Any] | None = None
        if self.sealed is not None:
            sealed = self.sealed.model_dump(by_alias=True, exclude_none=True)
        return Outgoing(
            content=self.content,
            sealed=sealed,
            encrypted=self.encrypted or sealed is not None,
            notify=self.notify,
            index=self.index,
            client_message_id=self.client_message_id,
            send_at=self.send_at,
            priority="" if self.priority == "normal" else self.priority,
        )


class SendDirect(Send):
    recipient_id: UserId


class SendGroup(Send):
    conversation_id: UuidText

    def uuid(self) -> UUID:
        return UUID(self.conversation_id)


class RegisterKey(Body):
    public_key_pem: Annotated[str, StringConstraints(min_length=1, max_length=20000)]


class Shred(Body):
    reason: Literal["erasure", "retention"] = "erasure"


class LegalHold(Body):
    """Why a conversation is put on (or taken off) legal hold."""

    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


Channel = Literal["push", "email", "sms"]
EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]{1,255}$"
PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"  # E.164


class NotificationPreferences(Body):
    """How the caller wants to hear of messages while away (personal data: never logged)."""

    channels: list[Channel] = Field(max_length=3)
    email: Annotated[str, StringConstraints(strict=True, pattern=EMAIL_PATTERN)] | None = None
    phone: Annotated[str, StringConstraints(strict=True, pattern=PHONE_PATTERN)] | None = None
    push_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    notify_when_online: bool = False

    @model_validator(mode="after")
    def _addresses(self) -> NotificationPreferences:
        needs = {"email": self.email, "sms": self.phone, "push": self.push_token}
        field = {"email": "email", "sms": "phone", "push": "pushToken"}
        for channel in self.channels:
            if not needs[channel]:
                raise PydanticCustomError(
                    "address_missing",
                    "the {channel} channel needs {field}",
                    {"channel": channel, "field": field[channel]},
                )
        return self


MODELS: tuple[type[Body], ...] = (
    CreateConversation,
    AddParticipants,
    Sealed,
    SendDirect,
    SendGroup,
    RegisterKey,
    Shred,
    LegalHold,
    NotificationPreferences,
)
