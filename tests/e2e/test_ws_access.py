"""Who may open the WebSocket, and with what (docs/API.md §6, docs/REALTIME.md): the role
`user`, a single-use ticket instead of a token in the URL, a browser page's `Origin`, and
the `since` backlog recorded in the audit trail like every other read."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.e2e.conftest import FAST, services_env
from tests.e2e.harness import Runtime, WsClient, auth, connected, free_port, token, wait_for

pytestmark = pytest.mark.e2e


def refused(url: str, origin: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error body of a refused handshake."""
    with pytest.raises(InvalidStatus) as caught:
        connect(url, open_timeout=10, origin=Origin(origin) if origin else None)
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}")


def ticket_for(http: httpx.Client, user: str, roles: list[str] | None = None) -> str:
    answer = http.post("/api/ws/ticket", headers=auth(user, roles=roles))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) == {"ticket", "expiresIn"}
    value: str = body["ticket"]
    return value


def ws_base(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ws"


def test_only_the_user_role_opens_the_socket_by_token_or_single_use_ticket(
    runtime: Runtime,
) -> None:
    http, base = runtime.http, ws_base(runtime.port)
    # Roles: an admin-only or auditor-only token is refused at the handshake, and gets no ticket.
    for roles in (["admin"], ["auditor"], ["admin", "auditor"]):
        status, body = refused(f"{base}?token={token('ops', roles=roles)}")
        assert (status, body["error"]["code"]) == (403, "forbidden"), roles
        answer = http.post("/api/ws/ticket", headers=auth("ops", roles=roles))
        assert answer.status_code == 403, roles
    assert http.post("/api/ws/ticket").status_code == 401
    connected(WsClient(f"{base}?token={token('ops', roles=['admin', 'user'])}")).close()

    # A ticket opens one socket, once; the token never travels in the URL.
    answer = http.post("/api/ws/ticket", headers=auth("bob"))
    assert answer.status_code == 201 and answer.json()["expiresIn"] == 30
    ticket = answer.json()["ticket"]
    bob = connected(WsClient(f"{base}?ticket={ticket}"))
    sent = http.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "hello"}, headers=auth("al")
    ).json()["message"]["id"]
    wait_for(lambda: bob.new_message_ids() == [sent], 10, "the live frame on the ticket's socket")
    for again in (ticket, ticket[:-1] + ("A" if ticket[-1] != "A" else "B"), "x", "a" * 5000):
        status, body = refused(f"{base}?ticket={again}")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    bob.close()
    # A ticket of an auditor-and-user token opens a socket for the user.
    connected(WsClient(f"{base}?ticket={ticket_for(http, 'cy', ['auditor', 'user'])}")).close()


def test_the_since_backlog_is_recorded_in_the_audit_trail(runtime: Runtime) -> None:
    http = runtime.http
    first = connected(runtime.ws("bob"))
    cursor = first.of_type("ready")[0]["cursor"]
    first.close()
    sent = [
        http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": f"while away {i}"},
            headers=auth("alice"),
        ).json()["message"]["id"]
        for i in range(3)
    ]
    for message_id in sent:
        runtime.wait_done("alice", message_id)
    back = connected(
        WsClient(f"{ws_base(runtime.port)}?ticket={ticket_for(http, 'bob')}&since={cursor}")
    )
    assert sorted(back.new_message_ids()) == sorted(sent)
    back.close()

    def backlog_views() -> list[dict[str, Any]] | None:
        answer = http.get("/api/audit/users/alice/access", headers=auth("ins", roles=["auditor"]))
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        found = [i for i in items if i["type"] == "Viewed" and i["data"]["what"] == "ws.backlog"]
        return found or None

    views = wait_for(backlog_views, 20, "the backlog's access record")
    assert len(views) == 1 and views[0]["actorId"] == "bob"
    assert sorted(views[0]["messageIds"]) == sorted(sent)
    assert sorted(views[0]["data"]["messageIds"]) == sorted(sent)
    assert views[0]["data"]["context"]["sourceIp"] == "127.0.0.1"
    # Connecting without since replays nothing and records nothing.
    connected(runtime.ws("bob")).close()
    answer = http.get("/api/audit/users/alice/access", headers=auth("ins", roles=["auditor"]))
    assert len([i for i in answer.json()["items"] if i["data"]["what"] == "ws.backlog"]) == 1


def test_a_browser_page_of_another_origin_is_refused_by_default(embedded: Runtime) -> None:
    base = ws_base(embedded.port)
    url = f"{base}?token={token('bob')}"
    for origin in (
        "https://evil.example",
        f"http://127.0.0.1:{embedded.port}.evil.example",
        "null",
    ):
        status, body = refused(url, origin)
        assert (status, body["error"]["code"]) == (403, "forbidden"), origin
    # The page's own origin (the console's), and clients that send no Origin, are let in.
    with connect(
        url, open_timeout=10, origin=Origin(f"http://127.0.0.1:{embedded.port}")
    ) as client:
        assert '"ready"' in str(client.recv(timeout=10))
    connected(WsClient(url)).close()


def test_ws_allowed_origins_is_the_list_of_origins_let_in(tmp_path: Path) -> None:
    env = {
        **FAST,
        "COURIER_DATA_DIR": str(tmp_path / "var"),
        "WS_ALLOWED_ORIGINS": "https://app.example.org",
    }
    runtime = Runtime("embedded", env, tmp_path).start()
    try:
        url = f"{ws_base(runtime.port)}?token={token('bob')}"
        with connect(url, open_timeout=10, origin=Origin("https://app.example.org")) as client:
            assert '"ready"' in str(client.recv(timeout=10))
        for origin in (f"http://127.0.0.1:{runtime.port}", "https://app.example.org.evil"):
            assert refused(url, origin)[0] == 403, origin
    finally:
        runtime.stop()


@pytest.fixture
def two_apis(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[tuple[Runtime, int]]:
    """Two API processes on one Redis; the second issues tickets that live 1 s."""
    runtime = Runtime("services", services_env(pg_schema, redis_url), tmp_path).start()
    second = free_port()
    runtime.start_role(
        "serve", "--port", str(second), name="serve-b", env={"WS_TICKET_SECONDS": "1"}
    )

    def ready() -> bool:
        try:
            return (
                httpx.get(f"http://127.0.0.1:{second}/health/ready", timeout=2).status_code == 200
            )
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, "the second API process to be ready")
    yield runtime, second
    runtime.stop()


def test_a_ticket_works_on_any_api_process_once_and_not_after_it_expires(
    two_apis: tuple[Runtime, int], redis_url: str
) -> None:
    runtime, port_b = two_apis
    ticket = ticket_for(runtime.http, "bob")
    connected(WsClient(f"{ws_base(port_b)}?ticket={ticket}")).close()
    assert refused(f"{ws_base(runtime.port)}?ticket={ticket}")[0] == 401
    assert refused(f"{ws_base(port_b)}?ticket={ticket}")[0] == 401

    with httpx.Client(base_url=f"http://127.0.0.1:{port_b}", timeout=30) as http_b:
        answer = http_b.post("/api/ws/ticket", headers=auth("bob"))
    assert answer.status_code == 201 and answer.json()["expiresIn"] == 1
    short = answer.json()["ticket"]
    key = "courier:ws-ticket:" + hashlib.sha256(short.encode()).hexdigest()
    store = redis.Redis.from_url(redis_url)
    try:
        # Kept under its digest, not as itself; Redis drops it when it expires.
        assert not store.keys(f"*{short}*")
        wait_for(lambda: not store.exists(key), 10, "the ticket to expire")
    finally:
        store.close()
    assert refused(f"{ws_base(runtime.port)}?ticket={short}")[0] == 401
