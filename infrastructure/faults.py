"""FAULT_INJECT: make chosen queues' handlers fail, for tests and demos. Inert by default."""

from __future__ import annotations

import threading

from application.jobs import QUEUES, Job

HANG = "hang"


class InjectedFault(RuntimeError):
    """A failure asked for by FAULT_INJECT."""

    safe_to_show = True


class FaultInjector:
    """Rules per queue, comma-separated.

    ``QUEUE:N`` fails each job of that queue on its first N attempts; ``QUEUE:always``
    fails every attempt; ``QUEUE:hang`` makes each job's first attempt hang until the
    worker abandons it at the queue's timeout (the thread is let go on ``release``).
    """

    def __init__(self, spec: str) -> None:
        self.rules: dict[str, int | str | None] = {}
        self.released = threading.Event()
        for part in filter(None, (p.strip() for p in spec.split(","))):
            queue, _, count = part.partition(":")
            if queue not in QUEUES:
                raise ValueError(f"FAULT_INJECT names an unknown queue: {queue}")
            if count == "always":
                self.rules[queue] = None
            elif count == HANG:
                self.rules[queue] = HANG
            elif count.isdigit():
                self.rules[queue] = int(count)
            else:
                raise ValueError(
                    f"FAULT_INJECT wants QUEUE:N, QUEUE:always or QUEUE:hang, got {part!r}"
                )

    def check(self, job: Job) -> None:
        if job.queue not in self.rules:
            return
        rule = self.rules[job.queue]
        if rule == HANG:
            if job.attempt == 1:
                self.released.wait()
                raise InjectedFault("injected hang, released")
            return
        if rule is None or (isinstance(rule, int) and job.attempt <= rule):
            raise InjectedFault(f"injected failure on attempt {job.attempt}")

    def release(self) -> None:
        """Let hung handlers end (on shutdown)."""
        self.released.set()
