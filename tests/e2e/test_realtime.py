"""The WebSocket read side at scale: two API processes, reconnecting with a cursor,
the protocol's frames and limits, and a slow client that is dropped alone."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State
from websockets.sync.client import connect

from tests.conftest import PG_DSN
from tests.e2e.conftest import FAST, services_env
from tests.e2e.harness import Runtime, WsClient, auth, connected, free_port, token, wait_for

pytestmark = pytest.mark.e2e


def ws_url(port: int, user: str, since: str | None = None, tenant: str = "t1") -> str:
    url = f"ws://127.0.0.1:{port}/ws?token={token(user, tenant)}"
    return url + (f"&since={since}" if since is not None else "")


def send(http: httpx.Client, sender: str, recipient: str, content: str) -> str:
    response = http.post(
        "/api/messages/direct",
        json={"recipientId": recipient, "content": content},
        headers=auth(sender),
    )
    assert response.status_code == 202, response.text
    message_id: str = response.json()["message"]["id"]
    return message_id


def frames_after_ready(client: WsClient) -> tuple[list[str], list[str]]:
    """Ids of message.new frames before the ready frame (the backlog) and after it."""
    with client.lock:
        frames = list(client.frames)
    kinds = [f["type"] for f in frames]
    ready = kinds.index("ready") if "ready" in kinds else len(frames)
    new = [(i, f["message"]["id"]) for i, f in enumerate(frames) if f["type"] == "message.new"]
    return [m for i, m in new if i < ready], [m for i, m in new if i > ready]


@pytest.fixture
def two_apis(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[tuple[Runtime, int]]:
    """The services runtime with a second API process on a port of its own."""
    runtime = Runtime("services", services_env(pg_schema, redis_url), tmp_path).start()
    second = free_port()
    runtime.start_role("serve", "--port", str(second), name="serve-b")
    wait_for(lambda: _ready(f"http://127.0.0.1:{second}"), 60, "the second API process to be ready")
    yield runtime, second
    runtime.stop()


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_message_sent_through_one_api_reaches_a_socket_on_the_other(
    two_apis: tuple[Runtime, int],
) -> None:
    runtime, port_b = two_apis
    bob = connected(WsClient(ws_url(port_b, "bob")))
    sent: list[str] = []
    for i in range(6):
        sent.append(send(runtime.http, "alice", "bob", f"cross-process {i}"))
        wait_for(lambda: len(bob.new_message_ids()) == len(sent), 10, f"frame {i} on process B")
    assert bob.new_message_ids() == sent
    cursor = bob.of_type("message.new")[-1]["cursor"]
    bob.close()

    # Bob is away: what he misses goes to him when he is back, on either process.
    missed = [send(runtime.http, "alice", "bob", f"while away {i}") for i in range(3)]
    for message_id in missed:
        runtime.wait_done("alice", message_id)
    back = connected(runtime.ws("bob", since=cursor))
    later = send(runtime.http, "alice", "bob", "welcome back")
    wait_for(lambda: later in back.new_message_ids(), 10, "the live frame after the backlog")
    backlog, live = frames_after_ready(back)
    # Exactly what he missed, in the order it was delivered (the workers run in parallel).
    assert sorted(backlog) == sorted(missed) and len(backlog) == 3 and live == [later]
    cursors = [int(f["cursor"]) for f in back.of_type("message.new")]
    assert cursors == sorted(cursors) and cursors[0] > int(cursor)
    back.close()

    # Delivered recorded who was online (a socket on process B) and who was not.
    schema = runtime.env["POSTGRES_SCHEMA"]
    with psycopg.connect(PG_DSN, options=f"-csearch_path={schema}") as conn:
        rows = dict(
            conn.execute(
                "SELECT message_id, online FROM message_recipients WHERE message_id = ANY(%s)",
                ([*sent, *missed],),
            ).fetchall()
        )
    assert [rows[m] for m in sent] == [True] * 6
    assert [rows[m] for m in missed] == [False] * 3


def test_reconnecting_with_the_last_cursor_misses_nothing_and_repeats_nothing(
    runtime: Runtime,
) -> None:
    first = connected(runtime.ws("bob"))
    ids: list[str] = []

    def sender() -> None:
        with httpx.Client(base_url=runtime.base_url, timeout=30) as http:
            for i in range(40):
                ids.append(send(http, "alice", "bob", f"stream {i}"))

    stream = threading.Thread(target=sender)
    stream.start()
    wait_for(lambda: len(first.new_message_ids()) >= 10, 30, "the first frames")
    first.close()
    seen = first.of_type("message.new")
    second = connected(runtime.ws("bob", since=seen[-1]["cursor"]))
    stream.join()
    wait_for(lambda: len(seen) + len(second.new_message_ids()) >= 40, 60, "all 40 messages")
    everything = [f["message"]["id"] for f in seen] + second.new_message_ids()
    assert Counter(everything) == Counter(ids), "each message exactly once over both sockets"
    cursors = [int(f["cursor"]) for f in [*seen, *second.of_type("message.new")]]
    assert cursors == sorted(cursors)
    second.close()


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Runtime]:
    """The embedded runtime with tight WebSocket limits."""
    env = {
        **FAST,
        "COURIER_DATA_DIR": str(tmp_path / "var"),
        "WS_IDLE_SECONDS": "3",
        "WS_MAX_PER_USER": "2",
    }
    runtime = Runtime("embedded", env, tmp_path).start()
    yield runtime
    runtime.stop()


def close_code(url: str, frames: list[dict[str, Any]] | None = None) -> int | None:
    """Connect, send ``frames``, and read until the server closes; its close code."""
    with connect(url, open_timeout=10) as client:
        for frame in frames or []:
            client.send(json.dumps(frame))
        try:
            while True:
                client.recv(timeout=15)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def test_the_protocol_frames_and_limits(strict: Runtime) -> None:
    port = strict.port
    for bad in ("", "not-a-jwt", token("bob", ttl=-120)):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/ws?token={bad}", open_timeout=10)
        assert refused.value.response.status_code == 401
    assert close_code(ws_url(port, "bob", since="abc")) == 4400

    lead = connected(strict.ws("lead"))
    conversation = strict.http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["nurse", "porter"], "title": "Ward 3"},
        headers=auth("lead"),
    ).json()
    nurse = connected(strict.ws("nurse"))
    nurse.send({"type": "ping"})
    nurse.send({"type": "subscribe", "conversationId": conversation["id"]})
    nurse.send({"type": "subscribe", "conversationId": "00000000-0000-0000-0000-000000000001"})
    nurse.send({"type": "ack", "messageId": "not-an-id"})
    nurse.send({"type": "shout"})
    wait_for(lambda: len(nurse.of_type("error")) == 3, 10, "three error frames")
    assert nurse.of_type("pong") == [{"type": "pong"}]
    assert nurse.of_type("subscribed") == [
        {"type": "subscribed", "conversationId": conversation["id"]}
    ]
    codes = [f["error"]["code"] for f in nurse.of_type("error")]
    assert codes == ["not_found", "bad_frame", "bad_frame"]

    sent = strict.http.post(
        "/api/messages/group",
        json={"conversationId": conversation["id"], "content": "trolley in bay 2"},
        headers=auth("lead"),
    ).json()["message"]["id"]
    frame = wait_for(lambda: nurse.of_type("message.new"), 10, "the group message")[0]
    nurse.send({"type": "ack", "messageId": frame["message"]["id"]})
    wait_for(lambda: nurse.of_type("acked"), 10, "the ack")
    assert nurse.of_type("acked") == [{"type": "acked", "messageId": sent}]
    # Status frames go to the sender and to the conversation's subscribers.
    wait_for(
        lambda: {"Delivered", "Indexed"} <= {f["event"] for f in nurse.of_type("message.status")},
        10,
        "status frames for the subscriber",
    )
    assert {f["messageId"] for f in lead.of_type("message.status")} == {sent}

    # A third socket for one user is refused; an idle one is closed; so is an expired token.
    second = connected(strict.ws("nurse"))
    assert close_code(ws_url(port, "nurse")) == 4429
    second.close()
    nurse.close()
    lead.close()
    assert close_code(ws_url(port, "idle")) == 4000
    expiring = f"ws://127.0.0.1:{port}/ws?token={token('brief', ttl=1)}"
    assert close_code(expiring, [{"type": "ping"}]) == 4401


def stalled_socket(port: int, user: str) -> socket.socket:
    """A WebSocket client that never reads: a small receive buffer, frames left unread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /ws?token={token(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += sock.recv(1)  # the handshake only: frames stay in the socket
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def drain(sock: socket.socket) -> tuple[int, int | None]:
    """Read what is left: how many text frames, and the server's close code."""
    protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    sock.settimeout(15)
    texts = 0
    while protocol.close_rcvd is None:
        data = sock.recv(1 << 16)
        if not data:
            break
        protocol.receive_data(data)
        texts += sum(1 for f in protocol.events_received() if f.opcode == Opcode.TEXT)
    return texts, protocol.close_rcvd.code if protocol.close_rcvd else None


def test_a_slow_client_is_dropped_and_nobody_else_waits(tmp_path: Path) -> None:
    env = {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var"), "WS_SEND_QUEUE": "8"}
    runtime = Runtime("embedded", env, tmp_path).start()
    slow: socket.socket | None = None
    brisk: WsClient | None = None
    try:
        slow = stalled_socket(runtime.port, "slow")
        brisk = connected(runtime.ws("brisk"))
        bulky = "x" * 60_000  # the kernel takes megabytes before the server has to wait
        sent = 0
        while "dropping a slow WebSocket client" not in runtime.logs():
            assert sent < 600, "the slow client was never dropped"
            send(runtime.http, "alice", "slow", bulky)
            send(runtime.http, "alice", "brisk", f"note {sent}")
            sent += 1
        wait_for(lambda: len(brisk.new_message_ids()) == sent, 30, "every frame for brisk")
        assert not brisk.closed.is_set(), "the brisk client was dropped too"
        assert runtime.logs().count("dropping a slow WebSocket client") == 1

        # Once it reads again it finds the frames that had reached it, then 4408.
        received, code = drain(slow)
        assert code == 4408
        assert 0 < received < sent
        # The service carries on for everyone, the dropped user included.
        again = connected(runtime.ws("slow"))
        send(runtime.http, "alice", "slow", "still there?")
        wait_for(lambda: again.new_message_ids(), 10, "a frame on the new socket")
        again.close()
    finally:
        if slow is not None:
            slow.close()
        if brisk is not None:
            brisk.close()
        runtime.stop()
