"""Security headers and CORS on a real server, and tokens never in any process log."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.e2e.conftest import FAST
from tests.e2e.harness import Runtime, WsClient, auth, connected, token, wait_for

pytestmark = pytest.mark.e2e

APP = "https://ward.example.org"
SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cross-origin-resource-policy": "same-origin",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp: Path = tmp_path_factory.mktemp("headers")
    env = {
        **FAST,
        "COURIER_DATA_DIR": str(tmp / "var"),
        "CORS_ORIGINS": APP,
        "MAX_BODY_BYTES": "4096",
        "RATE_LIMIT_PER_USER": "3",
    }
    runtime = Runtime("embedded", env, tmp).start()
    yield runtime
    runtime.stop()


def test_every_kind_of_answer_carries_the_security_headers(server: Runtime) -> None:
    http = server.http
    answers = {
        "ok": http.get("/api/users/me/notifications", headers=auth("hana")),
        "not found": http.get(f"/api/messages/{uuid.uuid4()}", headers=auth("hana")),
        "no token": http.get("/api/users/me/notifications"),
        "too large": http.post("/api/conversations", content=b"x" * 5000, headers=auth("iris")),
        "document": http.get("/openapi.json"),
        "metrics": http.get("/metrics"),
        "health": http.get("/health/live"),
    }
    for _ in range(3):
        http.get("/api/users/me/notifications", headers=auth("jo"))
    answers["rate limited"] = http.get("/api/users/me/notifications", headers=auth("jo"))
    assert answers["rate limited"].status_code == 429
    for name, response in answers.items():
        missing = {k: v for k, v in SECURITY.items() if response.headers.get(k) != v}
        assert not missing, (name, response.status_code, missing)
        assert "server" not in response.headers, name
        if response.url.path.startswith("/api"):
            assert response.headers["cache-control"] == "no-store", name


def test_cors_only_for_the_configured_origins(server: Runtime) -> None:
    http = server.http
    preflight = {
        "Origin": APP,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    allowed = http.options("/api/messages/direct", headers=preflight)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == APP
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in allowed.headers

    for changes in (
        {"Origin": "https://evil.example.com"},
        {"Origin": APP + ".evil.example.com"},
        {"Origin": "null"},
        {"Access-Control-Request-Method": "PATCH"},
        {"Access-Control-Request-Headers": "x-forwarded-for"},
    ):
        refused = http.options("/api/messages/direct", headers={**preflight, **changes})
        assert refused.status_code == 403, changes
        assert refused.json()["error"]["code"] == "cors_refused"
        assert "access-control-allow-origin" not in refused.headers

    # Real requests: an allowed origin may read even the errors; another gets no grant.
    mine = http.get("/api/users/me/notifications", headers={"Origin": APP})
    assert mine.status_code == 401
    assert mine.headers["access-control-allow-origin"] == APP
    assert "Retry-After" in mine.headers["access-control-expose-headers"]
    theirs = http.get("/api/users/me/notifications", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in theirs.headers
    assert "Origin" in theirs.headers["vary"]


def test_without_cors_origins_no_origin_is_granted(tmp_path: Path) -> None:
    runtime = Runtime("embedded", {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var")}, tmp_path)
    runtime.start()
    try:
        http = runtime.http
        answer = http.get("/health/live", headers={"Origin": APP})
        assert "access-control-allow-origin" not in answer.headers
        preflight = http.options(
            "/api/messages/direct",
            headers={"Origin": APP, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 405
        assert preflight.json()["error"]["code"] == "method_not_allowed"
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        runtime.stop()


# ---- tokens and logs ---------------------------------------------------------------------


def test_tokens_never_reach_any_log(tmp_path: Path) -> None:
    env = {
        **FAST,
        "COURIER_DATA_DIR": str(tmp_path / "var"),
        "RATE_LIMIT_PER_USER": "2",
        "HTTP_HEADER_TIMEOUT_SECONDS": "1",
        "HTTP_MAX_HEADER_BYTES": "8192",
        "HTTP_ACCESS_LOG": "1",  # off by default: the request lines are what is checked
    }
    runtime = Runtime("embedded", env, tmp_path).start()
    tokens = {name: token(name) for name in ("kai", "lee", "max", "ned", "oli", "pat")}
    forged = tokens["pat"][:-4] + "AAAA"
    try:
        http = runtime.http
        path = f"/api/messages/{uuid.uuid4()}"
        http.get(path, headers={"Authorization": f"Bearer {tokens['kai']}"})
        http.get(path, params={"token": tokens["kai"]}, headers=auth("kai"))
        http.get(path, headers={"Authorization": f"bearer {forged}"})  # 401, logged as one
        http.get(path, params={"token": forged, "since": "1"})
        lee = {"Authorization": f"Bearer {tokens['lee']}"}
        for _ in range(3):  # the last one is rate limited (429)
            http.get(f"{path}?token={tokens['lee']}", headers=lee)
        socket_client = connected(runtime.ws("max"))
        socket_client.close()
        ticket = http.post("/api/ws/ticket", headers=auth("max")).json()["ticket"]
        ticket_url = f"ws://127.0.0.1:{runtime.port}/ws?ticket={ticket}&since=0"
        connected(WsClient(ticket_url)).close()
        with pytest.raises(InvalidStatus):  # used: refused, and logged as a 401
            connect(ticket_url, open_timeout=10)
        url = f"ws://127.0.0.1:{runtime.port}/ws?since=0&token={forged}"
        with pytest.raises(InvalidStatus):
            connect(url, open_timeout=10)
        bad_cursor = f"ws://127.0.0.1:{runtime.port}/ws?token={tokens['ned']}&since=x"
        with connect(bad_cursor, open_timeout=10) as conn, pytest.raises(ConnectionClosed):
            conn.recv(timeout=10)  # accepted, then closed with 4400
        raw = [
            # malformed after a token in the request line
            f"GET /api/x?token={tokens['oli']} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
            # headers too large, the token in them
            f"GET /api/x HTTP/1.1\r\nAuthorization: Bearer {tokens['oli']}\r\n"
            f"X-Pad: {'p' * 9000}\r\n\r\n",
        ]
        for request in raw:
            with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
                sock.sendall(request.encode())
                while sock.recv(65536):
                    pass
        # A slow client with its token already sent: cut off, and logged.
        with socket.create_connection(("127.0.0.1", runtime.port), timeout=10) as sock:
            sock.sendall(f"GET /ws?token={tokens['pat']} HTTP/1.1\r\nHost: x\r\n".encode())
            while sock.recv(65536):
                pass
        wait_for(lambda: "too slowly" in runtime.logs(), 10, "the slow client to be logged")
    finally:
        runtime.stop()
    logs = runtime.logs()
    assert "token=[redacted]" in logs and " 429" in logs and " 401" in logs
    assert "ticket=[redacted]" in logs and ticket not in logs
    for name, value in {**tokens, "forged": forged}.items():
        for part in value.split("."):
            assert part not in logs, f"a part of {name}'s token is in the log"
