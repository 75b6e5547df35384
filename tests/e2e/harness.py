"""Real server processes and real clients for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
from websockets.sync.client import ClientConnection, connect

from benchmarks.runtime import Process as CourierProcess

T = TypeVar("T")
JWT_SECRET = "e2e-secret-" + "x" * 40
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def token(user: str, tenant: str = "t1", roles: list[str] | None = None, ttl: int = 3600) -> str:
    now = int(time.time())  # once: exp - iat is checked against JWT_MAX_LIFETIME_SECONDS
    claims = {
        "sub": user,
        "tenant": tenant,
        "roles": roles or ["user"],
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def auth(user: str, tenant: str = "t1", roles: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, tenant, roles)}"}


class Process(CourierProcess):
    """One `courier` process with its output in a log file named after it."""

    def __init__(
        self, role: str, env: dict[str, str], log_dir: Path, *args: str, name: str | None = None
    ) -> None:
        self.name = name or role
        super().__init__(role, env, log_dir / f"{self.name}-{int(time.time() * 1000)}.log", args)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.log_file is not None:
            self.log_file.close()


class Runtime:
    """A running Courier: embedded (one process) or services (API, relay, worker, projections)."""

    def __init__(self, kind: str, env: dict[str, str], log_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.env = {
            **os.environ,
            # Tests poll and send fast from one address; those about limits set their own.
            "RATE_LIMIT_PER_USER": "0",
            "RATE_LIMIT_PER_ADDRESS": "0",
            **env,
            "JWT_SECRET": JWT_SECRET,
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir = log_dir
        self.processes: dict[str, Process] = {}
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def start(self) -> Runtime:
        try:
            self.start_role("serve", "--port", str(self.port))
            if self.kind == "services":
                for role in ("relay", "worker", "projections"):
                    self.start_role(role)
            wait_for(self._ready, 60, "the API to be ready")
        except BaseException:
            # A fixture whose start fails never reaches its teardown: a worker left
            # running here would take later tests' jobs from the shared broker.
            self.stop()
            raise
        return self

    def start_role(
        self, role: str, *args: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> Process:
        """Start (or restart) a process of ``role``, kept under ``name`` (default: the role).

        Distinct names run several processes of one role; ``env`` overrides the runtime's.
        """
        key = name or role
        previous = self.processes.get(key)
        if previous is not None:
            previous.stop()
        process = Process(role, {**self.env, **(env or {})}, self.log_dir, *args, name=key)
        process.start()
        self.processes[key] = process
        return process

    def _ready(self) -> bool:
        serve = self.processes["serve"]
        if serve.proc is not None and serve.proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{serve.output()[-4000:]}")
        try:
            return self.http.get("/health/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.http.close()
        for process in self.processes.values():
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()}" for p in self.processes.values())

    def ws(self, user: str, tenant: str = "t1", since: str | None = None) -> WsClient:
        url = f"ws://127.0.0.1:{self.port}/ws?token={token(user, tenant)}"
        if since is not None:
            url += f"&since={since}"
        return WsClient(url)

    def message(self, user: str, message_id: str, tenant: str = "t1") -> dict[str, Any]:
        response = self.http.get(f"/api/messages/{message_id}", headers=auth(user, tenant))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_done(self, user: str, message_id: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            m = self.message(user, message_id)
            finished = m["status"] == "delivered" and m["indexed"] and m["notified"]
            return m if finished else None

        return wait_for(done, timeout, f"message {message_id} to be delivered, notified, indexed")


class WsClient:
    """A real WebSocket client collecting frames on a thread of its own."""

    def __init__(self, url: str) -> None:
        self._session = connect(url, open_timeout=10)
        self.conn: ClientConnection = self._session.__enter__()
        self.frames: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for raw in self.conn:
                with self.lock:
                    self.frames.append(json.loads(raw))
        except Exception:
            pass
        self.closed.set()

    def send(self, frame: dict[str, Any]) -> None:
        self.conn.send(json.dumps(frame))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [f for f in self.frames if f.get("type") == kind]

    def new_message_ids(self) -> list[str]:
        return [f["message"]["id"] for f in self.of_type("message.new")]

    def close(self) -> None:
        self._session.__exit__(None, None, None)
        self.thread.join(timeout=5)


def connected(client: WsClient) -> WsClient:
    """Wait until the server says the socket is registered for live frames."""
    wait_for(lambda: client.of_type("ready"), 10, "the WebSocket ready frame")
    return client
