"""What the load generator sends (``Call``) and what it measured (``LoadResult``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.stats import latency_summary, rate


@dataclass(frozen=True)
class Call:
    """One prepared HTTP request."""

    method: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str]


OnResponse = Callable[[int, int, bytes], None]  # (index of the call, status, body)


@dataclass
class LoadResult:
    sent: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    statuses: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0
    send_wall: float = 0.0  # open loop: from the first scheduled send to the last written
    # Open loop: how late each request went on the wire (written - scheduled), in seconds.
    # Small when the generator keeps its schedule; large when every connection is busy.
    send_lags: list[float] = field(default_factory=list)
    # Requests that found every open connection busy (waiting on the server) and queued here.
    queued: int = 0
    cpu: float = 0.0  # the generator process's CPU seconds (user + system) over the run

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "ok": self.ok,
            "errors": self.sent - self.ok,
            "statuses": dict(sorted(self.statuses.items())),
            "wallS": round(self.wall, 3),
            "throughputPerS": rate(self.ok, self.wall),
            **latency_summary(self.latencies),
            **_lags(self.send_lags),
            "queuedForConnection": self.queued,
            "generatorCpuS": round(self.cpu, 3),
            "generatorCpuMsPerRequest": round(1000 * self.cpu / self.sent, 3)
            if self.sent
            else None,
            "generatorCores": round(self.cpu / self.wall, 2) if self.wall > 0 else None,
        }


def _lags(lags: list[float]) -> dict[str, float | None]:
    if not lags:
        return {}
    figures = latency_summary(lags)
    return {"sendLagP50Ms": figures["p50Ms"], "sendLagP99Ms": figures["p99Ms"]}
