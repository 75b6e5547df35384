"""The rate limiter's arithmetic, in-process; Redis's own is in tests/e2e/test_rate_limits.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from infrastructure import ratelimit
from infrastructure.ratelimit import LocalWindows, RateLimiter, Rule
from infrastructure.settings import SettingsError, load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine: object) -> float:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_a_window_lets_the_limit_through_then_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(LocalWindows(clock), Rule(3, 60.0), Rule(0, 60.0))
    assert [run(limiter.user("t1", "alice")) for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.now += 20
    assert run(limiter.user("t1", "alice")) == pytest.approx(40.0)
    assert run(limiter.user("t1", "bob")) == 0.0  # everyone counts for themselves
    assert run(limiter.user("t2", "alice")) == 0.0  # and per tenant
    clock.now += 40
    assert run(limiter.user("t1", "alice")) == 0.0  # a new window


def test_a_limit_of_zero_is_no_limit() -> None:
    limiter = RateLimiter(LocalWindows(), Rule(0, 60.0), Rule(0, 60.0))
    assert all(run(limiter.address("10.0.0.1")) == 0.0 for _ in range(100))


def test_tenant_and_user_cannot_be_spelt_like_another_pair() -> None:
    windows = LocalWindows()
    limiter = RateLimiter(windows, Rule(1, 60.0), Rule(0, 60.0))
    run(limiter.user("a:b", "c"))
    assert run(limiter.user("a", "b:c")) == 0.0
    assert len(windows.counters) == 2


def test_old_windows_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_LOCAL_KEYS", 10)
    clock = Clock()
    windows = LocalWindows(clock)
    limiter = RateLimiter(windows, Rule(5, 1.0), Rule(0, 1.0))
    for n in range(10):
        run(limiter.user("t", f"u{n}"))
    clock.now += 2
    run(limiter.user("t", "late"))
    assert set(windows.counters) == {"u:1:t:late"}


class Unreachable:
    async def hit(self, key: str, window: float) -> tuple[int, float]:
        raise ConnectionError("redis is down")

    async def close(self) -> None:
        pass


def test_an_unreachable_store_lets_requests_through_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(Unreachable(), Rule(1, 60.0), Rule(1, 60.0))
    with caplog.at_level(logging.WARNING, logger="courier.ratelimit"):
        assert [run(limiter.address("10.0.0.2")) for _ in range(5)] == [0.0] * 5
    warnings = [r for r in caplog.records if "not enforced" in r.getMessage()]
    assert len(warnings) == 1  # once per 30 s, not once per request


def test_settings() -> None:
    env = {"JWT_SECRET": "s" * 40, "COURIER_DATA_DIR": "/tmp/courier-unit-unused"}
    env["DATABASE_URL"] = "postgresql://x@127.0.0.1/unused"
    env["ENCRYPTION_MASTER_KEYS"] = "unused"
    limits = load(env).limits
    assert (limits.rate_per_user, limits.rate_per_address, limits.rate_window) == (600, 3000, 60)
    assert limits.cors_origins == ()
    assert limits.max_body_bytes == 1 << 20
    changed = load(
        {
            **env,
            "RATE_LIMIT_PER_USER": "0",
            "CORS_ORIGINS": "https://app.example.org, http://localhost:3000/",
            "MAX_CONTENT_BYTES": "1000000",
            "JWT_LEEWAY_SECONDS": "0",
        }
    ).limits
    assert changed.rate_per_user == 0
    assert changed.cors_origins == ("https://app.example.org", "http://localhost:3000")
    assert changed.max_body_bytes == 6 * 1_000_000 + 64 * 1024  # the largest message fits
    assert changed.jwt_leeway == 0
    for bad in ("*", "app.example.org", "https://app.example.org/path"):
        with pytest.raises(SettingsError, match="CORS_ORIGINS"):
            load({**env, "CORS_ORIGINS": bad})
