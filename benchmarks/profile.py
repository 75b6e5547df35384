"""Optional sampling profiles of the server processes (py-spy, if installed)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiles:
    """One ``py-spy record`` per process, stopped together; collapsed stacks on disk."""

    def __init__(self, pids: dict[str, int], directory: Path, rate: int = 50) -> None:
        self.directory = directory
        self.paths = {role: directory / f"{role}.collapsed.txt" for role in pids}
        self.recorders: dict[str, subprocess.Popen[bytes]] = {}
        binary = py_spy()
        if binary is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        for role, pid in pids.items():
            self.recorders[role] = subprocess.Popen(
                [
                    binary,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(self.paths[role]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    @property
    def available(self) -> bool:
        return bool(self.recorders)

    def stop(self) -> dict[str, Any]:
        for recorder in self.recorders.values():
            recorder.send_signal(signal.SIGINT)
        for recorder in self.recorders.values():
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
        return {
            role: summarise(path) | {"file": str(path)}
            for role, path in self.paths.items()
            if path.exists()
        }


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """Where the GIL-holding samples were: top leaf frames (self), packages and own code.

    Recorded with ``--gil``: a sample is a moment some thread ran Python code, so the
    shares say where the process spent its CPU, not where its threads waited.
    """
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(frame) for frame in stack.split(";")]
        leaves[frames[-1]] += count
        for package in {_package(frame) for frame in frames}:
            packages[package] += count
        for frame in {f for f in frames if _package(f) in OWN}:
            own[frame] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "selfTop": [{"frame": f, "pct": share(n)} for f, n in leaves.most_common(top)],
        "packagesInclusive": [
            {"package": p, "pct": share(n)} for p, n in packages.most_common(top)
        ],
        "ownCodeInclusive": [{"frame": f, "pct": share(n)} for f, n in own.most_common(top)],
    }


OWN = {"application", "domain", "infrastructure", "projections", "interfaces"}


def _function(frame: str) -> str:
    """``func (pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: lines of one function together."""
    name, _, where = frame.rpartition(" (")
    return f"{name} ({where.rstrip(')').rpartition(':')[0] or where.rstrip(')')})"


def _package(frame: str) -> str:
    """``func (psycopg/cursor.py:12)`` -> ``psycopg``; ``(threading.py:1)`` -> ``threading``."""
    path = frame.rpartition("(")[2].rstrip(")")
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return path.lstrip("/").split("/", 1)[0].removesuffix(".py") or "?"
