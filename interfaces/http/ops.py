"""Operations, without auth: liveness, readiness, the OpenAPI document.

``GET /metrics`` is not here: ``create_app(..., extra_routes=[...])`` is where the
process adds it (Prometheus text, its own content type).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from interfaces.http import responses
from interfaces.http.endpoints import Endpoint, answer, respond, services


async def live(request: Request) -> Response:
    return answer(responses.Liveness(status="ok"))


async def ready(request: Request) -> Response:
    checks = await run_in_threadpool(services(request).readiness)
    ok = all(checks.values())
    readiness = responses.Readiness(status="ready" if ok else "unavailable", checks=checks)
    return answer(readiness, 200 if ok else 503)


async def openapi(request: Request) -> Response:
    return respond(request.app.state.openapi)


ENDPOINTS = (
    Endpoint(
        "GET", "/health/live", live, "The process is up", auth=False, response=responses.Liveness
    ),
    Endpoint(
        "GET",
        "/health/ready",
        ready,
        "Every dependency answers (else 503)",
        auth=False,
        response=responses.Readiness,
        also=(503,),
    ),
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        "This document",
        auth=False,
        response=responses.OpenApiDocument,
    ),
)
