"""Per-request figures for ``/metrics``: requests by route template, method and status,
with their latency in histogram buckets.

The send path runs through here, so recording costs a dict lookup, a bisect and three
additions on the event loop's thread (no lock: only that thread writes). The route is
the template the router matched (``/api/messages/{message_id}``), looked up from the
endpoint it left in the scope; a path no route matched counts as ``unmatched``, so no
client can add series by inventing paths.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from time import perf_counter

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SUM = len(BOUNDS) + 1  # index of the seconds' sum; before it, one count per bucket and +Inf

Key = tuple[str, str, int]


class HttpStats:
    """Counts per (route template, method, status): bucket counts and the seconds' sum."""

    def __init__(self) -> None:
        self.series: dict[Key, list[float]] = {}
        self.unavailable: dict[str, int] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (SUM + 1)
        counts[bisect_left(BOUNDS, seconds)] += 1
        counts[SUM] += seconds

    def refused(self, cause: str) -> None:
        """A 503 because a store could not be used (``cause``: which, and why)."""
        self.unavailable[cause] = self.unavailable.get(cause, 0) + 1

    def snapshot(self) -> HttpStats:
        """A copy to render on another thread while this one goes on counting."""
        copy = HttpStats()
        copy.series = {key: list(counts) for key, counts in list(self.series.items())}
        copy.unavailable = dict(self.unavailable)
        return copy

    def families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "courier_http_requests",
            "HTTP requests answered, by route template, method and status",
            labels=["route", "method", "status"],
        )
        latency = HistogramMetricFamily(
            "courier_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template",
            labels=["route", "method", "status"],
        )
        for (route, method, status), counts in sorted(self.series.items()):
            labels = [route, method, str(status)]
            total = sum(counts[:SUM])
            requests.add_metric(labels, total)
            cumulative, buckets = 0.0, []
            for bound, count in zip((*BOUNDS, float("inf")), counts[:SUM], strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric(labels, buckets, counts[SUM])
        unavailable = CounterMetricFamily(
            "courier_http_unavailable",
            "Answers 503 because a store could not be used: event_store (unreachable, "
            "the store gate shut), lock_timeout (the event store's lock waited out), "
            "read_store (the read database unreachable)",
            labels=["cause"],
        )
        for cause, count in sorted(self.unavailable.items()):
            unavailable.add_metric([cause], float(count))
        yield from (requests, latency, unavailable)


def route_templates(routes: Iterable[BaseRoute]) -> dict[int, str]:
    """The path template of each route, by the id of the endpoint the router puts in
    the scope when it matches (a Mount's is its app)."""
    templates: dict[int, str] = {}
    for route in routes:
        if isinstance(route, Route):
            templates[id(route.endpoint)] = route.path
        elif isinstance(route, Mount):
            templates[id(route.app)] = route.path or "/"
    return templates


class HttpTelemetry:
    """ASGI middleware: times every HTTP request and counts it in ``stats``."""

    def __init__(self, app: ASGIApp, stats: HttpStats, templates: dict[int, str]) -> None:
        self.app = app
        self.stats = stats
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # an error no handler answered becomes a 500 further out

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = UNMATCHED if endpoint is None else self.templates.get(id(endpoint), UNMATCHED)
            method = scope["method"]
            self.stats.observe(
                route, method if method in METHODS else "other", status, perf_counter() - start
            )
