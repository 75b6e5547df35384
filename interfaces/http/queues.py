"""Queue monitoring for operators (role ``admin``): metrics, health, failed jobs, retry."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from interfaces.http.auth import authenticate
from interfaces.http.endpoints import ADMIN, Endpoint, Param, respond, services
from interfaces.http.errors import not_found
from interfaces.http.parsing import query_int

PAGE_DEFAULT, PAGE_MAX, OFFSET_MAX = 50, 200, 1_000_000


class Monitor(Protocol):
    """What these endpoints read (``runtime.queue_monitor.QueueMonitor``)."""

    def knows(self, name: str) -> bool: ...
    def metrics(self) -> dict[str, Any]: ...
    def health(self, name: str) -> dict[str, Any]: ...
    def failed(
        self, tenant_id: str, queue: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]: ...


def monitor(request: Request) -> Monitor:
    found: Monitor = request.app.state.container.monitor
    return found


def queue_name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not monitor(request).knows(name):
        raise not_found("queue")
    return name


async def metrics(request: Request) -> Response:
    authenticate(request)
    return respond(await run_in_threadpool(monitor(request).metrics))


async def health(request: Request) -> Response:
    authenticate(request)
    name = queue_name(request)
    return respond(await run_in_threadpool(monitor(request).health, name))


async def failed(request: Request) -> Response:
    principal = authenticate(request)
    name = queue_name(request)
    limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    offset = query_int(request, "offset", 0, 0, OFFSET_MAX)
    items, total = await run_in_threadpool(
        monitor(request).failed, principal.tenant_id, name, limit, offset
    )
    return respond({"items": items, "total": total})


async def retry(request: Request) -> Response:
    principal = authenticate(request)
    name = queue_name(request)
    job_id: str = request.path_params["jobId"]
    if job_id.partition(":")[0] != name:
        raise not_found("failed job")
    app = services(request).messaging
    job = await run_in_threadpool(app.request_retry, principal.context, job_id)
    return respond({"jobId": job.job_id, "state": "waiting"}, 202)


ENDPOINTS = (
    Endpoint(
        "GET",
        "/api/messages/queue/metrics",
        metrics,
        "Waiting, active, delayed, completed and failed jobs, throughput and latency per queue",
        roles=ADMIN,
        response="QueueMetrics",
    ),
    Endpoint(
        "GET",
        "/api/messages/queue/{name}/health",
        health,
        "A queue's health (healthy, degraded, unhealthy) and the checks behind it",
        roles=ADMIN,
        response="QueueHealth",
    ),
    Endpoint(
        "GET",
        "/api/messages/queue/{name}/failed",
        failed,
        "The caller's tenant's failed jobs of a queue, newest first (no message content)",
        roles=ADMIN,
        response="FailedJobs",
        query=(
            Param(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": PAGE_MAX, "default": PAGE_DEFAULT},
            ),
            Param("offset", {"type": "integer", "minimum": 0, "default": 0}),
        ),
    ),
    Endpoint(
        "POST",
        "/api/messages/queue/{name}/failed/{jobId}/retry",
        retry,
        "Run a failed job again (recorded with who asked)",
        status=202,
        roles=ADMIN,
        response="RetryAnswer",
    ),
)
