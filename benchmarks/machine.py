"""Facts about the machine and the processes: CPU time, load, the commit measured."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.runtime import ROOT, cpu_seconds, machine_cpu

Cpu = dict[str, float | None]


@dataclass
class Snapshot:
    """CPU seconds per process and of the whole machine, at one moment."""

    at: float
    processes: Cpu
    machine: tuple[float, float]

    @classmethod
    def take(cls, pids: dict[str, int]) -> Snapshot:
        processes: Cpu = {role: cpu_seconds(pid) for role, pid in pids.items()}
        times = os.times()
        processes["bench"] = times.user + times.system
        return cls(time.time(), processes, machine_cpu())

    def since(self, earlier: Snapshot) -> dict[str, Any]:
        wall = self.at - earlier.at
        per: dict[str, Any] = {}
        for role, now in self.processes.items():
            before = earlier.processes.get(role)
            if now is not None and before is not None:
                per[role] = {
                    "cpuS": round(now - before, 2),
                    "cores": round((now - before) / wall, 2),
                }
        busy = self.machine[0] - earlier.machine[0]
        total = self.machine[1] - earlier.machine[1]
        cores = os.cpu_count() or 1
        return {
            "wallS": round(wall, 2),
            "processes": per,
            "machineBusyCores": round(cores * busy / total, 2) if total else None,
        }


def mb(value: int | None) -> float | None:
    return None if value is None else round(value / 1024 / 1024, 1)


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def meta(command: str) -> dict[str, Any]:
    return {
        "startedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        **git_facts(),
        "machine": {
            "cores": os.cpu_count(),
            "memoryGb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
        "loadAverageStart": loadavg(),
    }


def git_facts() -> dict[str, Any]:
    """The commit measured, and whether the tree had changes on top of it (read-only)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(changed),
        "changedFiles": len(changed),
    }


def redact(url: str) -> str:
    """Drop a password from a URL before it is written anywhere."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}{sep}{auth.split(':', 1)[0]}:***@{host}"
