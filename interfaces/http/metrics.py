"""``GET /metrics``: the queue figures of ``/api/messages/queue/metrics`` for Prometheus.

Read at scrape time from the broker and the durable job records, so any API process
answers for every worker. The process's own job counters follow (they are non-zero
where workers run in this process, as on the embedded default).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

GAUGES = (
    ("waiting", "Jobs waiting in the broker"),
    ("active", "Jobs running now, in any worker process"),
    ("delayed", "Jobs waiting out a retry backoff (or handed to the relay)"),
    ("completed", "Jobs completed (within the job-record retention)"),
    ("failed", "Jobs that exhausted their attempts and wait in the failed list"),
    ("throughput_per_minute", "Jobs completed in the last minute"),
)


class QueueCollector(Collector):
    """Collects the monitor's figures on every scrape."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        figures = {name: f.as_dict() for name, f in self.monitor.figures().items()}
        keys = {"throughput_per_minute": "throughputPerMinute"}
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


def _render(container: Any) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(container.monitor))
    return generate_latest(registry) + generate_latest(container.stats.registry)


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(_render, request.app.state.container)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def metrics_route() -> Route:
    return Route("/metrics", metrics, methods=["GET"], name="metrics")
