"""FAULT_INJECT: make chosen queues' handlers fail, for tests and demos. Inert by default."""

from __future__ import annotations

from application.jobs import QUEUES, Job


class InjectedFault(RuntimeError):
    """A failure asked for by FAULT_INJECT."""

    safe_to_show = True


class FaultInjector:
    """``QUEUE:N`` fails each job of that queue on its first N attempts; ``QUEUE:always`` always."""

    def __init__(self, spec: str) -> None:
        self.rules: dict[str, int | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            queue, _, count = part.partition(":")
            if queue not in QUEUES:
                raise ValueError(f"FAULT_INJECT names an unknown queue: {queue}")
            if count == "always":
                self.rules[queue] = None
            elif count.isdigit():
                self.rules[queue] = int(count)
            else:
                raise ValueError(f"FAULT_INJECT wants QUEUE:N or QUEUE:always, got {part!r}")

    def check(self, job: Job) -> None:
        if job.queue not in self.rules:
            return
        limit = self.rules[job.queue]
        if limit is None or job.attempt <= limit:
            raise InjectedFault(f"injected failure on attempt {job.attempt}")
