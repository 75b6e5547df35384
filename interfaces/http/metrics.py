"""``GET /metrics``: the figures Prometheus scrapes (docs/DEPLOYMENT.md, "Alerts").

Queue figures (those of ``/api/messages/queue/metrics``, and the age of the oldest
waiting job) are read at scrape time from the broker and the durable job records, so
any API process answers for every worker. So are the other processes' figures: each
projection's and the relay's position from the ``followers`` table against the log's
head, and relay leadership from the leader lock. This process's own figures follow:
HTTP requests (interfaces/http/telemetry.py), the store gate, WebSocket connections,
and the job counters (non-zero where workers run in this process, as embedded).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from infrastructure.liveness import follower_positions, leader_held
from infrastructure.runtime.container import Container
from infrastructure.runtime.relay import RELAY, lock_key
from interfaces.http.telemetry import HttpStats
from projections.catalog import PROJECTIONS

GAUGES = (
    ("waiting", "Jobs waiting in the broker"),
    ("active", "Jobs running now, in any worker process"),
    ("delayed", "Jobs waiting out a retry backoff (or handed to the relay)"),
    ("completed", "Jobs completed (within the job-record retention)"),
    ("failed", "Jobs that exhausted their attempts and wait in the failed list"),
    ("retries_requested", "Operator retries of failed jobs (from the event log)"),
    ("throughput_per_minute", "Jobs completed in the last minute"),
)


class QueueCollector(Collector):
    """Collects the monitor's figures on every scrape."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        figures = {name: f.as_dict() for name, f in self.monitor.figures().items()}
        keys = {
            "throughput_per_minute": "throughputPerMinute",
            "retries_requested": "retriesRequested",
        }
        for metric, text in GAUGES:
            family = GaugeMetricFamily(f"courier_queue_{metric}", text, labels=["queue"])
            for name, values in figures.items():
                value = values[keys.get(metric, metric)]
                if value is not None:
                    family.add_metric([name], float(value))
            yield family
        latency = GaugeMetricFamily(
            "courier_queue_latency_seconds",
            "Run time of jobs completed in the last 5 minutes, by quantile",
            labels=["queue", "quantile"],
        )
        for name, values in figures.items():
            for quantile, key in (("0.5", "p50Ms"), ("0.95", "p95Ms")):
                if values[key] is not None:
                    latency.add_metric([name, quantile], values[key] / 1000.0)
        yield latency
        oldest = GaugeMetricFamily(
            "courier_queue_oldest_waiting_seconds",
            "Age of the oldest job the log scheduled that no event completed or failed yet "
            "(jobs scheduled in the last 24 hours; 0 when none)",
            labels=["queue"],
        )
        for name, age in self.monitor.log.oldest_open(self.monitor.queues).items():
            oldest.add_metric([name], age)
        yield oldest


def _gauge(name: str, text: str, value: float | None, labels: Any = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=list(labels) or None)
    if value is not None:
        family.add_metric([], value)
    return family


class ServiceCollector(Collector):
    """Followers' lag, relay leadership, the store gate and WebSocket connections."""

    def __init__(self, container: Container, hub: Any) -> None:
        self.container = container
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        container = self.container
        head: int | None = None
        positions: dict[str, int] = {}
        try:
            head = container.event_log.last_position()
            positions = follower_positions(container.engine)
        except Exception:
            head = None  # a store is down: its gate and the 503s say so
        yield _gauge("courier_log_head_position", "Position of the event log's last event", head)
        position = GaugeMetricFamily(
            "courier_projection_position",
            "Last log position each projection applied",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "courier_projection_lag_events",
            "Log positions between the log's head and each projection's position",
            labels=["projection"],
        )
        if head is not None:
            for projection in PROJECTIONS:
                done = positions.get(projection.name, 0)
                position.add_metric([projection.name], done)
                lag.add_metric([projection.name], max(0, head - done))
        yield position
        yield lag
        relay_lag = None if head is None else max(0, head - positions.get(RELAY, 0))
        yield _gauge(
            "courier_relay_lag_events",
            "Log positions between the log's head and the last one the relay published",
            relay_lag,
        )
        yield _gauge(
            "courier_relay_leader",
            "1 while a relay holds the leader lock (any process), 0 while none does",
            self._leader(),
        )
        gate = container.store_gate
        yield _gauge(
            "courier_store_gate_open",
            "1 while this process's event-store gate lets calls through, 0 while it is "
            "shut after a connection failure (always 1 without PostgreSQL)",
            0.0 if gate is not None and gate.down else 1.0,
        )
        yield from _group_commits(container)
        connections = None
        if self.hub is not None:
            with self.hub.lock:
                connections = sum(self.hub.tenants.values())
        yield _gauge(
            "courier_websocket_connections",
            "WebSocket connections open on this API process",
            connections,
        )

    def _leader(self) -> float | None:
        container = self.container
        if not container.settings.is_postgres:
            # No lock without PostgreSQL: the relay runs in this process or nowhere.
            relay = container.relay
            return 1.0 if relay is not None and relay.is_alive() else 0.0
        schema = container.settings.postgres_schema
        try:
            return 1.0 if leader_held(container.engine, lock_key(RELAY, schema)) else 0.0
        except Exception:
            return None


def _group_commits(container: Container) -> Iterator[Metric]:
    """The counters of this process's group commit (none where it has none)."""
    committer = container.committer
    if committer is None:
        return
    for name, text, value in (
        (
            "batches",
            "Batches of commands this process's group commit stored together",
            committer.batches,
        ),
        ("commands", "Commands the group commits of this process stored", committer.commands),
        (
            "conflicts",
            "Group commits that conflicted and were stored again in parts",
            committer.conflicts,
        ),
    ):
        family = CounterMetricFamily(f"courier_group_commit_{name}", text)
        family.add_metric([], float(value))
        yield family


class HttpCollector(Collector):
    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from self.stats.families()


def _render(container: Container, hub: Any, http: HttpStats | None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(container.monitor))
    registry.register(ServiceCollector(container, hub))
    if http is not None:
        registry.register(HttpCollector(http))
    return generate_latest(registry) + generate_latest(container.stats.registry)


async def metrics(request: Request) -> Response:
    state = request.app.state
    stats = getattr(state, "http_stats", None)
    # Copied here, on the event loop's thread, which alone updates them.
    http = stats.snapshot() if stats is not None else None
    hub = getattr(state, "hub", None)
    body = await run_in_threadpool(_render, state.container, hub, http)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_route() -> Route:
    return Route("/metrics", metrics, methods=["GET"], name="metrics")
