"""Hostile clients against a real server: oversized and malformed requests, slow
clients, abusive WebSocket frames. Each answer is a 4xx in the error format (or the
documented close code), the server carries on for everyone else, and nothing leaves
a traceback in the log."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.sync.client import connect

from tests.e2e.conftest import FAST
from tests.e2e.harness import Runtime, auth, connected, token, wait_for

pytestmark = pytest.mark.e2e

BODY_CAP = 64 * 1024
HEADER_CAP = 8 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
FRAME_CAP = 4096
FRAMES_PER_SECOND = 5
WS_IDLE = 3.0
LIMITS = {
    "WS_IDLE_SECONDS": str(WS_IDLE),
    "MAX_BODY_BYTES": str(BODY_CAP),
    "HTTP_MAX_HEADER_BYTES": str(HEADER_CAP),
    "HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "HTTP_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "WS_MAX_FRAME_BYTES": str(FRAME_CAP),
    "WS_MAX_FRAMES_PER_SECOND": str(FRAMES_PER_SECOND),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    env = {**FAST, **LIMITS, "COURIER_DATA_DIR": str(tmp / "var")}
    runtime = Runtime("embedded", env, tmp).start()
    yield runtime
    runtime.stop()
    logs = runtime.logs()
    for sign in ("Traceback", "Exception in ASGI application", "unhandled error"):
        assert sign not in logs, logs[-6000:]


def error_of(status: int, body: bytes | str) -> str:
    """The error code of an answer in the format of docs/API.md §2 (fail if it is not one)."""
    assert 400 <= status < 500, (status, body)
    parsed = json.loads(body)
    assert set(parsed) == {"error"} and set(parsed["error"]) == {"code", "message", "details"}
    code: str = parsed["error"]["code"]
    return code


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """Send ``data`` on a fresh connection; status, head and body of what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = read_until_closed(sock)
    return parse(answer)


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def parse(answer: bytes) -> tuple[int, bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    return int(head.split()[1]), head, body


# ---- HTTP: sizes and shapes ------------------------------------------------------------


def test_a_body_over_the_whole_body_cap_is_413_on_any_route(server: Runtime) -> None:
    http = server.http
    big = b"x" * (BODY_CAP + 1)
    headers = {**auth("alice"), "Content-Type": "application/json"}
    for method, path in (
        ("POST", "/api/conversations"),
        ("GET", "/health/live"),  # a route that never reads a body
        ("POST", "/api/nowhere"),
    ):
        response = http.request(method, path, content=big, headers=headers)
        assert response.status_code == 413, (path, response.text)
        assert error_of(413, response.content) == "content_too_large"
        assert response.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(BODY_CAP // 1024 + 2):
            yield b" " * 1024

    response = http.post("/api/conversations", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert error_of(413, response.content) == "content_too_large"
    assert http.get("/health/live").status_code == 200


def test_json_nested_too_deep_is_400(server: Runtime) -> None:
    deep = '{"type": "group", "participantIds": ["bob"], "title": ' + "[" * 5000 + "]" * 5000 + "}"
    response = server.http.post(
        "/api/conversations",
        content=deep,
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(400, response.content) == "invalid_json"


def test_headers_over_the_cap_are_431_in_the_error_format(server: Runtime) -> None:
    filler = "a" * HEADER_CAP
    request = f"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n".encode()
    status, head, body = raw_exchange(server.port, request)
    assert status == 431
    assert error_of(status, body) == "headers_too_large"
    assert b"content-security-policy: default-src 'none'" in head.lower()
    # A token that big cannot even arrive; one under the cap but over 8 KiB is refused.
    huge = "Bearer " + "a" * (HEADER_CAP - 200)
    response = server.http.get(f"/api/messages/{uuid.uuid4()}", headers={"Authorization": huge})
    assert response.status_code == 401


def test_headers_arriving_in_pieces_past_the_cap_are_431_before_they_end(
    server: Runtime,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        # Never finished (no blank line); only the last piece takes it past the cap, so
        # nothing is sent after the refusal (which could reset the connection).
        for n in range(HEADER_CAP // 1024 + 1):
            sock.sendall(f"X-Part-{n}: {'a' * 1000}\r\n".encode())
        status, head, body = parse(read_until_closed(sock))
    assert status == 431
    assert error_of(status, body) == "headers_too_large"
    assert b"content-security-policy: default-src 'none'" in head.lower()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["garbage", "negative-length", "malformed-header", "bad-chunk"],
)
def test_malformed_http_is_400_in_the_error_format(server: Runtime, request_bytes: bytes) -> None:
    status, _, body = raw_exchange(server.port, request_bytes)
    assert status == 400
    assert error_of(status, body) == "bad_request"


# ---- HTTP: slow clients ----------------------------------------------------------------


def trickle(sock: socket.socket, data: bytes, every: float) -> tuple[float, bytes]:
    """Send ``data`` a byte at a time until the server hangs up; when, and what it said."""
    started = time.monotonic()
    answer = b""
    stop = threading.Event()

    def reader() -> None:
        nonlocal answer
        answer = read_until_closed(sock)
        stop.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    for byte in data:
        if stop.wait(every):  # the pace of the attack, not a synchronisation
            break
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
    thread.join(timeout=30)
    return time.monotonic() - started, answer


def test_a_client_sending_its_headers_byte_by_byte_is_cut_off(server: Runtime) -> None:
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 400 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        took, answer = trickle(sock, request, every=0.05)
    assert took < HEADER_TIMEOUT + 3, took
    status, _, body = parse(answer)
    assert status == 408
    assert error_of(status, body) == "request_timeout"


def test_a_client_that_connects_and_says_nothing_is_cut_off(server: Runtime) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    status, _, body = parse(answer)
    assert status == 408
    assert error_of(status, body) == "request_timeout"


def test_a_client_sending_its_body_byte_by_byte_is_cut_off(server: Runtime) -> None:
    body = json.dumps({"type": "group", "participantIds": ["bob"]}).encode() + b" " * 400
    head = (
        "POST /api/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token('alice')}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        took, answer = trickle(sock, body, every=0.05)
    assert took < BODY_TIMEOUT + 3, took
    status, _, payload = parse(answer)
    assert status == 408
    assert error_of(status, payload) == "request_timeout"


def test_slow_clients_do_not_stop_anyone_else(server: Runtime) -> None:
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(50)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # and never finish
        response = httpx.get(server.base_url + "/health/ready", timeout=5)
        assert response.status_code == 200
        answers = [parse(read_until_closed(sock))[0] for sock in slow]
        assert answers == [408] * len(slow)
    finally:
        for sock in slow:
            sock.close()


def test_keep_alive_between_requests_still_works(server: Runtime) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(3):
            assert client.get("/health/live").status_code == 200


# ---- WebSocket ---------------------------------------------------------------------------


def ws(server: Runtime, user: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"token": token(user), **params}.items())
    return f"ws://127.0.0.1:{server.port}/ws?{query}"


def test_a_websocket_frame_over_the_cap_closes_with_1009(server: Runtime) -> None:
    with connect(ws(server, "big"), open_timeout=10, max_size=None) as conn:
        assert json.loads(conn.recv(timeout=10))["type"] == "ready"
        conn.send(json.dumps({"type": "ping", "pad": "x" * FRAME_CAP}))
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_too_many_frames_per_second_close_with_4429(server: Runtime) -> None:
    with connect(ws(server, "chatty"), open_timeout=10) as conn:
        assert json.loads(conn.recv(timeout=10))["type"] == "ready"
        for _ in range(FRAMES_PER_SECOND * 3):
            try:
                conn.send(json.dumps({"type": "ping"}))
            except ConnectionClosed:
                break
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                conn.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4429


def test_binary_and_deeply_nested_frames_are_bad_frames(server: Runtime) -> None:
    client = connected(server.ws("odd"))
    try:
        client.conn.send(b"\x00\x01binary")
        client.conn.send("[" * 3000)  # deeper than any JSON parser recurses
        client.conn.send(json.dumps({"type": "subscribe", "conversationId": "x" * 1000}))
        wait_for(lambda: len(client.of_type("error")) == 3, 10, "three error frames")
        codes = [f["error"]["code"] for f in client.of_type("error")]
        assert codes == ["bad_frame", "bad_frame", "not_found"]
        client.send({"type": "ping"})
        wait_for(lambda: client.of_type("pong"), 10, "the socket to answer a ping")
    finally:
        client.close()


def test_a_websocket_frame_sent_byte_by_byte_is_cut_off_as_idle(server: Runtime) -> None:
    frame = Frame(Opcode.TEXT, json.dumps({"type": "ping", "pad": "x" * 400}).encode())
    data = frame.serialize(mask=True, extensions=[])
    protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            f"GET /ws?token={token('trickler')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock.settimeout(0.05)  # the pace of the attack: a byte every 50 ms
        started, sent = time.monotonic(), 0
        while protocol.close_rcvd is None and sent < len(data):
            sock.send(data[sent : sent + 1])
            sent += 1
            try:
                protocol.receive_data(sock.recv(65536))
            except TimeoutError:
                continue
            protocol.events_received()
        took = time.monotonic() - started
    assert protocol.close_rcvd is not None, "the frame was sent whole and never cut off"
    assert protocol.close_rcvd.code == 4000
    assert sent < len(data)
    assert took < WS_IDLE + 3, took


@pytest.mark.parametrize("since", ["9" * 19, "9" * 5000, "-1", "\uff11\uff12"])
def test_a_cursor_that_cannot_be_one_closes_with_4400(server: Runtime, since: str) -> None:
    with (
        connect(ws(server, "cursor", since=since), open_timeout=10) as conn,
        pytest.raises(ConnectionClosed) as closed,
    ):
        conn.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400


def test_a_huge_token_is_refused_at_the_handshake(server: Runtime) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws?token={'a' * 7000}.{'b' * 900}.c"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10)
    assert refused.value.response.status_code == 401


# ---- text PostgreSQL cannot store ----------------------------------------------------------


def test_nul_characters_are_refused_and_the_read_side_keeps_going(services: Runtime) -> None:
    """A NUL in text is valid JSON but not storable in PostgreSQL text: once in an event
    it stopped the messages and search projections for everyone. Now refused at the door."""
    http = services.http
    alice = auth("alice")
    refused = [
        http.post(
            "/api/messages/direct", json={"recipientId": "bob", "content": "a\x00b"}, headers=alice
        ),
        http.post(
            "/api/conversations",
            json={"type": "group", "participantIds": ["bob"], "title": "t\x00"},
            headers=alice,
        ),
        http.post(
            "/api/messages/direct",
            json={"recipientId": "bob", "content": "x", "clientMessageId": "\x00"},
            headers=alice,
        ),
        http.get("/api/search", params={"q": "a\x00"}, headers=alice),
        http.get(
            "/api/audit/events", params={"actorId": "\x00"}, headers=auth("a", roles=["auditor"])
        ),
    ]
    assert [r.status_code for r in refused] == [422] * len(refused), [r.text for r in refused]
    assert all(r.json()["error"]["code"] == "validation_error" for r in refused)
    assert http.get("/api/keys/bob%00", headers=alice).status_code == 404
    sent = http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "still flowing"},
        headers=alice,
    ).json()["message"]["id"]
    services.wait_done("alice", sent)
    found = wait_for(
        lambda: http.get("/api/search", params={"q": "flowing"}, headers=alice).json()["items"],
        30,
        "the message to be searchable",
    )
    assert [m["id"] for m in found] == [sent]
