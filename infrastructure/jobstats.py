"""Per-queue counters of job outcomes in this process (exported on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from application.jobs import Job


class JobStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.outcomes = Counter(
            "courier_jobs_total",
            "Jobs by queue and outcome",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "courier_job_seconds",
            "Job run time by queue",
            ["queue"],
            registry=self.registry,
        )

    def record(self, job: Job, outcome: str, seconds: float, reason: str) -> None:
        self.outcomes.labels(job.queue, outcome).inc()
        if outcome == "completed":
            self.latency.labels(job.queue).observe(seconds)
