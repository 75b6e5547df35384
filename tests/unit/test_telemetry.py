"""Request figures for /metrics: route templates, statuses, latency buckets, 503 causes."""

from __future__ import annotations

import psycopg
from eventsourcing import persistence
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from infrastructure.storegate import LockTimeout
from interfaces.http.errors import exception_handlers
from interfaces.http.telemetry import (
    BOUNDS,
    SUM,
    UNMATCHED,
    HttpStats,
    HttpTelemetry,
    route_templates,
)


async def item(request: Request) -> Response:
    return Response("ok")


async def gate_shut(request: Request) -> Response:
    raise persistence.OperationalError("the event store is unreachable")


async def lock_waited(request: Request) -> Response:
    raise LockTimeout("lock timeout") from psycopg.errors.LockNotAvailable()


def client() -> tuple[TestClient, HttpStats]:
    routes = [
        Route("/items/{item_id}", item),
        Route("/store", gate_shut),
        Route("/lock", lock_waited),
    ]
    stats = HttpStats()
    app = Starlette(
        routes=routes,
        middleware=[Middleware(HttpTelemetry, stats=stats, templates=route_templates(routes))],
        exception_handlers=exception_handlers(),
    )
    app.state.http_stats = stats
    return TestClient(app), stats


def test_requests_are_counted_by_route_template_never_by_path() -> None:
    http, stats = client()
    for name in ("a", "b", "c"):
        assert http.get(f"/items/{name}").status_code == 200
    assert http.post("/items/a").status_code == 405
    assert http.get("/elsewhere/secret-id").status_code == 404
    assert http.request("BREW", "/items/a").status_code == 405
    counts = {key: int(sum(series[:SUM])) for key, series in stats.series.items()}
    assert counts == {
        ("/items/{item_id}", "GET", 200): 3,
        ("/items/{item_id}", "POST", 405): 1,
        ("/items/{item_id}", "other", 405): 1,
        (UNMATCHED, "GET", 404): 1,
    }
    series = stats.series[("/items/{item_id}", "GET", 200)]
    assert len(series) == len(BOUNDS) + 2 and series[SUM] > 0


def test_store_outages_count_their_cause() -> None:
    http, stats = client()
    assert http.get("/store").status_code == 503
    assert http.get("/lock").status_code == 503
    assert stats.unavailable == {"event_store": 1, "lock_timeout": 1}
    assert ("/store", "GET", 503) in stats.series


def test_families_render_cumulative_buckets() -> None:
    stats = HttpStats()
    stats.observe("/r", "GET", 200, 0.001)
    stats.observe("/r", "GET", 200, 0.3)
    stats.observe("/r", "GET", 200, 99.0)
    requests, latency, _ = stats.families()
    assert [s.value for s in requests.samples] == [3.0]
    buckets = {s.labels["le"]: s.value for s in latency.samples if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.25"] == 1 and buckets["0.5"] == 2
    assert buckets["10.0"] == 2 and buckets["+Inf"] == 3
