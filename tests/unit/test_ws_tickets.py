"""WebSocket tickets (in-process store), the Origin rule and their settings."""

from __future__ import annotations

import logging

import pytest

from infrastructure.settings import Settings, SettingsError, load
from infrastructure.tickets import KEY_PREFIX, LocalTickets
from interfaces.http.app import RedactTokens
from interfaces.http.ws import origin_allowed

BASE = {"JWT_SECRET": "s" * 40, "ENCRYPTION_MASTER_KEYS": "k1:" + "A" * 43 + "="}
URL = "postgresql://courier@db.example.org:5432/courier"


def settings(**env: str) -> Settings:
    return load({**BASE, "DATABASE_URL": URL, **env})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_ticket_is_redeemed_once_and_not_after_it_expires() -> None:
    clock = Clock()
    tickets = LocalTickets(clock)
    first = tickets.issue("alice", 30)
    second = tickets.issue("bob", 30)
    assert first != second and len(first) == 43
    assert tickets.redeem(first) == "alice"
    assert tickets.redeem(first) is None  # used
    clock.now += 30
    assert tickets.redeem(second) is None  # expired
    for bad in ("", "x", "a" * 5000, first + "A", KEY_PREFIX):
        assert tickets.redeem(bad) is None


def test_expired_tickets_do_not_pile_up() -> None:
    clock = Clock()
    tickets = LocalTickets(clock)
    for _ in range(100):
        tickets.issue("alice", 1)
    clock.now += 2
    live = tickets.issue("bob", 30)
    assert len(tickets._items) == 1 and tickets.redeem(live) == "bob"


def test_ticket_settings_and_their_bounds() -> None:
    assert settings().ws_ticket_seconds == 30
    assert settings(WS_TICKET_SECONDS="0").ws_ticket_seconds == 1
    assert settings(WS_TICKET_SECONDS="100000").ws_ticket_seconds == 300
    assert settings().ws_allowed_origins == ()
    assert settings(WS_ALLOWED_ORIGINS="*").ws_allowed_origins == ("*",)
    both = settings(WS_ALLOWED_ORIGINS="https://a.example.org/, http://b.example:8080")
    assert both.ws_allowed_origins == ("https://a.example.org", "http://b.example:8080")
    for bad in ("a.example.org", "https://a.example.org/path", "ftp://a.example.org"):
        with pytest.raises(SettingsError, match="WS_ALLOWED_ORIGINS"):
            settings(WS_ALLOWED_ORIGINS=bad)


def test_by_default_only_the_pages_own_origin_and_cors_origins_may_open_the_socket() -> None:
    s = settings(CORS_ORIGINS="https://app.example.org")
    assert origin_allowed(None, "courier.example.org", s)  # not a browser
    assert origin_allowed("https://courier.example.org", "courier.example.org", s)
    assert origin_allowed("http://COURIER.example.org:8000", "courier.example.org:8000", s)
    assert origin_allowed("https://app.example.org", "courier.example.org", s)
    for origin in (
        "https://evil.example",
        "https://courier.example.org.evil.example",
        "https://courier.example.org:8443",
        "null",
        "",
    ):
        assert not origin_allowed(origin, "courier.example.org", s), origin
    assert not origin_allowed("https://courier.example.org", "", s)


def test_ws_allowed_origins_replaces_the_default() -> None:
    s = settings(WS_ALLOWED_ORIGINS="https://app.example.org")
    assert origin_allowed("https://app.example.org", "courier.example.org", s)
    assert not origin_allowed("https://courier.example.org", "courier.example.org", s)
    assert origin_allowed(None, "courier.example.org", s)
    anyone = settings(WS_ALLOWED_ORIGINS="*")
    assert origin_allowed("https://evil.example", "courier.example.org", anyone)


def test_tickets_are_redacted_from_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '"GET %s HTTP/1.1" 101',
        ("/ws?ticket=Zm9vYmFyYmF6cXV4-_abc&since=4",),
        None,
    )
    RedactTokens().filter(record)
    assert record.getMessage() == '"GET /ws?ticket=[redacted]&since=4 HTTP/1.1" 101'
