"""Rate limits per user and per address on real servers: counted in Redis across two API
processes when REDIS_URL is set, in the process otherwise; 429 with Retry-After."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import FAST, services_env
from tests.e2e.harness import Runtime, auth, free_port, token, wait_for

pytestmark = pytest.mark.e2e

PER_USER, PER_ADDRESS, WINDOW = 5, 12, 60


def limited(runtime_env: dict[str, str]) -> dict[str, str]:
    return {
        **runtime_env,
        "RATE_LIMIT_PER_USER": str(PER_USER),
        "RATE_LIMIT_PER_ADDRESS": str(PER_ADDRESS),
        "RATE_LIMIT_WINDOW_SECONDS": str(WINDOW),
    }


def check_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert 1 <= int(response.headers["Retry-After"]) <= WINDOW


@pytest.fixture
def two_apis(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[tuple[Runtime, str]]:
    runtime = Runtime("services", limited(services_env(pg_schema, redis_url)), tmp_path).start()
    port = free_port()
    runtime.start_role("serve", "--port", str(port), name="serve-b")
    second = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(second + "/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "the second API process")
    yield runtime, second
    runtime.stop()


def test_limits_are_shared_by_api_processes_through_redis(
    two_apis: tuple[Runtime, str], redis_url: str
) -> None:
    runtime, second = two_apis
    b = httpx.Client(base_url=second, timeout=30)
    path = f"/api/messages/{uuid.uuid4()}"
    # alice: three calls on one process, two on the other: the sixth is one too many.
    answers = [runtime.http.get(path, headers=auth("alice")).status_code for _ in range(3)]
    answers += [b.get(path, headers=auth("alice")).status_code for _ in range(2)]
    assert answers == [404] * PER_USER
    check_429(b.get(path, headers=auth("alice")))
    check_429(runtime.http.get(path, headers=auth("alice")))
    # bob has a count of his own, but shares the address: 7 requests so far.
    assert [b.get(path, headers=auth("bob")).status_code for _ in range(5)] == [404] * 5
    # 12 from this address: the next is refused before its token is even looked at.
    check_429(runtime.http.get(path, headers={"Authorization": "Bearer forged"}))
    check_429(b.post("/api/conversations", json={}, headers=auth("carol")))
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{runtime.port}/ws?token={token('dave')}", open_timeout=10)
    assert refused.value.response.status_code == 429
    # Operations endpoints are not limited (monitoring must see a service under attack).
    assert b.get("/health/live").status_code == 200
    assert runtime.http.get("/metrics").status_code == 200
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys("courier:ratelimit:*")}
    # carol, the forger and dave never got past the address's count.
    assert keys == {
        "courier:ratelimit:a:127.0.0.1",
        "courier:ratelimit:u:2:t1:alice",
        "courier:ratelimit:u:2:t1:bob",
    }
    b.close()


def test_limits_without_redis_are_kept_in_the_process(tmp_path: Path) -> None:
    env = limited({**FAST, "COURIER_DATA_DIR": str(tmp_path / "var")})
    runtime = Runtime("embedded", env, tmp_path).start()
    try:
        path = f"/api/messages/{uuid.uuid4()}"
        answers = [runtime.http.get(path, headers=auth("erin")).status_code for _ in range(6)]
        assert answers == [404] * PER_USER + [429]
        check_429(runtime.http.get(path, headers=auth("erin")))
        assert runtime.http.get(path, headers=auth("frank")).status_code == 404
    finally:
        runtime.stop()
