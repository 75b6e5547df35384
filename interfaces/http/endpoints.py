"""What an endpoint is, and what it may reach (docs/DEVELOPMENT.md: interfaces are thin)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import BaseModel
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from application.messaging import Messaging
from application.ports import ContactBook, MessageQueries
from infrastructure.settings import Settings
from infrastructure.tickets import Tickets
from projections.audit_queries import EventFilter, Page
from projections.chain import Verdict

Handler = Callable[[Request], Awaitable[Response]]


class Monitor(Protocol):
    """The queues as operators see them (``infrastructure.runtime.queue_monitor.QueueMonitor``)."""

    def knows(self, name: str) -> bool: ...
    def metrics(self) -> dict[str, Any]: ...
    def health(self, name: str) -> dict[str, Any]: ...
    def failed(
        self, tenant_id: str, queue: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]: ...


class AuditReader(Protocol):
    """The audit view's answers (``projections.audit_queries.AuditQueriesSQL``)."""

    def events(
        self, tenant_id: str, where: EventFilter, cursor: str | None, limit: int
    ) -> Page: ...
    def trail(
        self, tenant_id: str, message_id: str, cursor: str | None, limit: int
    ) -> Page | None: ...
    def access(self, tenant_id: str, user_id: str, cursor: str | None, limit: int) -> Page: ...
    def holds(self, tenant_id: str) -> list[dict[str, Any]]: ...


class Chain(Protocol):
    """The audit hash chain's keeper (``infrastructure.chain.ChainKeeper``)."""

    def check(self) -> Verdict: ...


class Services(Protocol):
    """The part of the process's container the HTTP layer uses."""

    @property
    def settings(self) -> Settings: ...

    @property
    def messaging(self) -> Messaging: ...

    @property
    def queries(self) -> MessageQueries: ...

    @property
    def monitor(self) -> Monitor: ...

    @property
    def audit(self) -> AuditReader: ...

    @property
    def chain(self) -> Chain: ...

    @property
    def contacts(self) -> ContactBook: ...

    @property
    def tickets(self) -> Tickets: ...

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
    ``response`` is the success answer's model (``interfaces.http.responses``)."""

    method: str
    path: str
    handler: Handler
    summary: str
    status: int = 200
    body: type[BaseModel] | None = None
    query: tuple[Param, ...] = field(default=())
    auth: bool = True
    roles: tuple[str, ...] = USER
    response: type[BaseModel] | None = None
    also: tuple[int, ...] = ()  # other success statuses with the same answer


def services(conn: HTTPConnection) -> Services:
    """The process's container, as the HTTP layer may use it."""
    container: Services = conn.app.state.container
    return container


class OrjsonResponse(JSONResponse):
    """A JSON answer encoded by orjson (the same compact UTF-8 JSON, several times faster)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def respond(data: Any, status: int = 200) -> JSONResponse:
    return OrjsonResponse(data, status_code=status)


def answer(model: BaseModel, status: int = 200) -> JSONResponse:
    """``model`` as the answer's JSON body (camelCase keys, in the model's order)."""
    return OrjsonResponse(model.model_dump(mode="json", by_alias=True), status_code=status)
