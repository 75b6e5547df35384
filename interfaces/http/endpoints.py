"""What an endpoint is, and what it may reach (docs/DEVELOPMENT.md: interfaces are thin)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from application.messaging import Messaging
from application.ports import MessageQueries
from infrastructure.settings import Settings

Handler = Callable[[Request], Awaitable[Response]]


class Services(Protocol):
    """The part of the process's container the HTTP layer uses."""

    @property
    def settings(self) -> Settings: ...

    @property
    def messaging(self) -> Messaging: ...

    @property
    def queries(self) -> MessageQueries: ...

    def readiness(self) -> dict[str, bool]: ...


@dataclass(frozen=True)
class Param:
    """A query parameter, for the OpenAPI document."""

    name: str
    schema: dict[str, Any]
    required: bool = False


USER = ("user",)
ADMIN = ("admin",)
AUDITOR = ("auditor",)


@dataclass(frozen=True)
class Endpoint:
    """A route: ``roles`` (any one of them will do) are checked before the handler runs,
    ``response`` names the success answer's schema in ``interfaces.http.responses``."""

    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    query: tuple[Param, ...] = field(default=())
    auth: bool = True
    roles: tuple[str, ...] = USER
    response: str | None = None
    also: tuple[int, ...] = ()  # other success statuses with the same answer


def services(request: Request) -> Services:
    container: Services = request.app.state.container
    return container


class OrjsonResponse(JSONResponse):
    """A JSON answer encoded by orjson (the same compact UTF-8 JSON, several times faster)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def respond(data: Any, status: int = 200) -> JSONResponse:
    return OrjsonResponse(data, status_code=status)
