"""The application's own errors; interfaces map each to an HTTP answer."""

from __future__ import annotations


class CourierError(Exception):
    code = "error"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(CourierError):
    code = "not_found"


class Forbidden(CourierError):
    code = "forbidden"


class Conflict(CourierError):
    code = "conflict"


class OnLegalHold(Conflict):
    """The message's conversation is under legal hold: its content keys must stay."""

    code = "legal_hold"


class Invalid(CourierError):
    code = "validation_error"


class EncryptionRequired(Invalid):
    """The deployment's policy (``REQUIRE_ENCRYPTION``) refuses plain-text messages."""

    code = "encryption_required"


class MissingKeys(CourierError):
    code = "recipient_key_missing"


class Gone(CourierError):
    code = "gone"


class ContentShredded(Gone):
    """The message's content key was destroyed: its content can never be read again."""

    code = "content_shredded"


class NotReady(Conflict):
    """What was asked for does not exist yet; asking again later will work."""

    code = "not_ready"
