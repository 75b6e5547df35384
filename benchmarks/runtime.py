"""A services runtime of its own for one benchmark run.

Mirrors ``tests/e2e/harness.py`` (benchmarks never import from tests): a fresh
PostgreSQL schema, the broker's and Redis's database flushed, and the four
processes `courier serve | relay | worker | projections`, each logging to a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg

from benchmarks.w1 import TOKEN_LIFETIME_SECONDS

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("serve", "relay", "worker", "projections")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def new_master_keys() -> str:
    from infrastructure.crypto import generate_master_key_spec

    return generate_master_key_spec()


def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` figure of /proc/<pid>/status (VmHWM, VmRSS) in bytes; None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


@dataclass
class Process:
    role: str
    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    def start(self) -> Process:
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "interfaces.cli", self.role, *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.log_file is not None:
            self.log_file.close()


@dataclass
class ServicesRuntime:
    """PostgreSQL + a broker + Redis, and one process of each role."""

    database_url: str
    broker_url: str
    redis_url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    schema: str = field(default_factory=lambda: "bench_" + uuid.uuid4().hex[:10])
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    master_keys: str = field(default_factory=lambda: new_master_keys())
    port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "POSTGRES_SCHEMA": self.schema,
            "BROKER_URL": self.broker_url,
            "REDIS_URL": self.redis_url,
            "JWT_SECRET": self.jwt_secret,
            "ENCRYPTION_MASTER_KEYS": self.master_keys,
            "PYTHONUNBUFFERED": "1",
            # A benchmark measures the service, not its rate limits.
            "RATE_LIMIT_PER_USER": "0",
            "RATE_LIMIT_PER_ADDRESS": "0",
            # Its tokens are minted once and must outlast a long soak (w1.mint).
            "JWT_MAX_LIFETIME_SECONDS": str(TOKEN_LIFETIME_SECONDS),
            **self.extra_env,
        }

    def connect(self) -> psycopg.Connection[Any]:
        """A connection to the run's database with the run's schema on the search path."""
        return psycopg.connect(
            self.database_url, autocommit=True, options=f"-csearch_path={self.schema}"
        )

    def prepare(self) -> None:
        """The run's empty schema, and no job or key of an earlier run."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
        flush_broker(self.broker_url)
        flush_redis(self.redis_url)

    def start(self) -> ServicesRuntime:
        self.prepare()
        env = self.env()
        # The API first: it applies the migrations; the others then find the tables made.
        self._start("serve", env, "--port", str(self.port))
        wait_until(self._ready, 90, "the API to be ready")
        for role in ROLES[1:]:
            self._start(role, env)
        for role in ROLES[1:]:
            wait_until(partial(self._started, self.processes[role]), 60, f"courier {role} to start")
        return self

    def _start(self, role: str, env: dict[str, str], *args: str) -> None:
        path = self.log_dir / f"{role}.log"
        self.processes[role] = Process(role, env, path, args).start()

    def _started(self, process: Process) -> bool:
        if not process.alive():
            raise RuntimeError(f"courier {process.role} exited:\n{process.output()[-3000:]}")
        return f"courier {process.role} started" in process.output()

    def _ready(self) -> bool:
        serve = self.processes["serve"]
        if not serve.alive():
            raise RuntimeError(f"courier serve exited:\n{serve.output()[-3000:]}")
        try:
            return httpx.get(self.base_url + "/health/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.processes.items() if p.alive()}

    def check_alive(self) -> None:
        for process in self.processes.values():
            if not process.alive():
                raise RuntimeError(f"courier {process.role} exited:\n{process.output()[-3000:]}")

    def stop(self, drop: bool = True) -> None:
        for role in reversed(ROLES):
            if role in self.processes:
                self.processes[role].stop()
        if drop:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.database_url, autocommit=True) as conn,
            ):
                conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            flush_broker(self.broker_url)
            flush_redis(self.redis_url)


def flush_redis(url: str) -> None:
    """Empty the run's Redis database (the benchmark must be given one of its own)."""
    if not url.startswith(("redis://", "rediss://")):
        return
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


def flush_broker(url: str) -> None:
    """Leave no job of an earlier run in Courier's queues."""
    if url.startswith(("redis://", "rediss://")):
        flush_redis(url)
        return
    if not url.startswith("amqp"):
        return
    from kombu import Connection

    from application.jobs import QUEUES
    from infrastructure.broker import queue_for

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.default_channel
        for name in QUEUES:
            queue = queue_for(name).bind(channel)
            queue.declare()
            queue.purge()
