"""Reading a request: its JSON body, path ids and query parameters."""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from interfaces.http.errors import ApiError, invalid, not_found
from interfaces.http.schemas import is_user_id

M = TypeVar("M", bound=BaseModel)

KIB = 1024
SMALL_BODY = 1024 * KIB  # conversations, participants, keys: 5000 ids fit easily
NOT_AN_OBJECT = ("model_type", "model_attributes_type", "dict_type")
NUL = "\x00"
NO_NUL = "must not contain the NUL character (U+0000)"
NUL_ESCAPE = b"\\u0000"


def message_body_limit(max_content_bytes: int) -> int:
    """Room for content of the limit however it is escaped (``\\u0001`` is 6 bytes for 1)."""
    return 6 * max_content_bytes + 64 * KIB


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is longer than ``limit`` bytes."""
    if not _is_json(request.headers.get("content-type", "")):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    message = f"the request body is larger than {limit} bytes"
    return ApiError(413, "content_too_large", message, headers={"Connection": "close"})


async def read_json(request: Request, model: type[M], limit: int = SMALL_BODY) -> M:
    """The body as ``model``: 400 when it is not a JSON object, 422 when it does not fit."""
    body = await read_body(request, limit)
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as error:
        for e in error.errors(include_input=False):
            if e["type"] == "json_invalid":
                reason = str((e.get("ctx") or {}).get("error", "malformed"))
                raise ApiError(
                    400, "invalid_json", f"the body is not valid JSON: {reason}"
                ) from None
            if not e["loc"] and e["type"] in NOT_AN_OBJECT:
                raise ApiError(400, "invalid_json", "the body must be a JSON object") from None
        raise
    # Valid JSON, but PostgreSQL cannot store it in text, and a stored event that the
    # read side cannot write would stop that projection for everyone. JSON can only
    # carry a NUL escaped (a raw one is invalid): without "\u0000" there is none.
    if NUL_ESCAPE in body:
        field = _nul_field(parsed.model_dump(by_alias=True))
        if field is not None:
            raise invalid(field, NO_NUL)
    return parsed


def _nul_field(value: Any, path: str = "") -> str | None:
    """Where in ``value`` a string (or key) holds a NUL character, if anywhere."""
    if isinstance(value, str):
        return path or "body" if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return where
            found = _nul_field(item, where)
            if found is not None:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _nul_field(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def path_uuid(request: Request, what: str, name: str = "id") -> UUID:
    """A path id; one that is not a UUID cannot exist, so it is simply not found."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        raise not_found(what) from None


def path_user_id(request: Request, name: str = "userId") -> str:
    value: str = request.path_params[name]
    if not is_user_id(value):
        raise not_found("user")
    return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise invalid(name, f"must be a whole number from {low} to {high}")
    return int(raw)


def query_text(
    request: Request, name: str, max_length: int, *, required: bool = False
) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise invalid(name, "is required")
        return None
    if len(raw) > max_length:
        raise invalid(name, f"must be at most {max_length} characters")
    if NUL in raw:
        raise invalid(name, NO_NUL)
    return raw


def query_uuid(request: Request, name: str) -> UUID | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise invalid(name, "must be a UUID") from None
