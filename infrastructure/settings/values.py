"""How one environment variable's text becomes a value, and what is said when it cannot.

A value of the wrong shape raises ``ValueError`` with the reason only ("must be a whole
number, got 'x'"); ``load`` puts the variable's name in front. A rule that involves
several variables, or that says more, raises ``SettingsError`` with the whole message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError


class SettingsError(Exception):
    """A setting is missing or malformed; the message says which and what to do."""


TRUE = ("1", "true", "yes", "on")
FALSE = ("", "0", "false", "no", "off")


def parse_flag(raw: object) -> object:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off."""
    if not isinstance(raw, str):
        return raw
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")


def parse_whole(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None


def parse_number(raw: object) -> object:
    if not isinstance(raw, str):
        return raw
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


N = TypeVar("N", int, float)


def at_least(low: N) -> AfterValidator:
    """Clamped up to ``low`` (a smaller value would only break things)."""
    clamp: Callable[[N], N] = lambda value: max(low, value)  # noqa: E731
    return AfterValidator(clamp)


def between(low: int, high: int) -> AfterValidator:
    return AfterValidator(lambda value: min(high, max(low, value)))


Flag = Annotated[bool, BeforeValidator(parse_flag)]
Whole = Annotated[int, BeforeValidator(parse_whole)]
Number = Annotated[float, BeforeValidator(parse_number)]


def stripped(raw: object) -> object:
    """Surrounding blanks dropped; nothing left is unset."""
    return (raw.strip() or None) if isinstance(raw, str) else raw


def origins(raw: str) -> tuple[str, ...]:
    """A comma-separated list of origins (scheme and host, no path)."""
    found = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in found:
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path:
            raise SettingsError(
                "CORS_ORIGINS must be a comma-separated list of origins such as "
                f"https://app.example.org (scheme and host, no path), got {origin!r}"
            )
    return found


def ws_origins(raw: str) -> tuple[str, ...]:
    """``WS_ALLOWED_ORIGINS``: exact origins (as ``CORS_ORIGINS``), or ``*`` for any."""
    if raw.strip() == "*":
        return ("*",)
    try:
        return origins(raw)
    except SettingsError:
        raise SettingsError(
            "WS_ALLOWED_ORIGINS must be * or a comma-separated list of origins such as "
            "https://app.example.org (scheme and host, no path)"
        ) from None


M = TypeVar("M", bound=BaseModel)


def read(model: type[M], env: Mapping[str, str]) -> M:
    """``model`` from environment variables; an empty variable counts as unset."""
    try:
        return model.model_validate({k: v for k, v in env.items() if v != ""})
    except ValidationError as error:
        raise SettingsError(explain(error)) from None


def explain(error: ValidationError) -> str:
    """The first problem, named by its variable."""
    first = error.errors()[0]
    variable = next((str(p) for p in reversed(first["loc"]) if isinstance(p, str)), "a setting")
    reason = first.get("ctx", {}).get("error")
    return f"{variable} {reason}" if reason is not None else f"{variable}: {first['msg']}"
