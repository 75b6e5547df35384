"""The HTTP API in-process: a real Messaging on the memory store, fakes for the rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx2 as httpx
import jwt
import psycopg
import pytest
import sqlalchemy.exc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from eventsourcing import persistence
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from application.messaging import Crypto, Messaging
from application.ports import (
    InvalidPublicKey,
    PublicKeyInfo,
    SealedContent,
    VaultEntry,
    WrapFormat,
    holds_key,
)
from infrastructure.settings import Settings, load
from interfaces.http.app import ENDPOINTS, RedactTokens, create_app, install_log_redaction
from interfaces.http.auth import AuthError, authenticate, decode_token, mint_token
from interfaces.http.parsing import message_body_limit

SECRET = "unit-test-secret-" + "s" * 48
MAX = 1000
TENANT = "acme"
PEM = "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n"


# ---- fakes ---------------------------------------------------------------------------


class FakeCipher:
    def seal(self, plaintext: bytes, aad: bytes) -> SealedContent:
        return SealedContent(plaintext[::-1], b"i" * 12, b"t" * 16, aad, b"k" * 32)

    def open(self, data_key: bytes, iv: bytes, ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        return ciphertext[::-1]

    def inspect_public_key(self, pem: str) -> PublicKeyInfo:
        if "BEGIN PUBLIC KEY" not in pem:
            raise InvalidPublicKey("not a PEM RSA public key")
        digest = hashlib.sha256(pem.encode()).hexdigest()
        return PublicKeyInfo(key_id=digest[:16], fingerprint=digest, bits=4096)

    def wrap_for(self, public_key_pem: str, data_key: bytes) -> bytes:
        return b"wrapped:" + data_key


class FakeKeyring:
    @property
    def active_key_id(self) -> str:
        return "mk1"

    @property
    def wrap_format(self) -> WrapFormat:
        return WrapFormat(b"W", 60)

    def wrap(self, data_key: bytes, context: str) -> tuple[str, bytes]:
        return "mk1", b"W" + data_key

    def unwrap(self, key_id: str, wrapped: bytes, context: str) -> bytes:
        return wrapped[1:]

    def digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class DictVault:
    def __init__(self) -> None:
        self.entries: dict[tuple[UUID, str, str], VaultEntry] = {}

    def put(self, entries: list[VaultEntry]) -> None:
        for entry in entries:
            self.entries[(entry.message_id, entry.holder_type, entry.holder)] = entry

    def get(self, message_id: UUID, holder_type: str, holder: str) -> VaultEntry | None:
        return self.entries.get((message_id, holder_type, holder))

    def shred(self, message_id: UUID) -> int:
        doomed = [k for k in self.entries if k[0] == message_id]
        for key in doomed:
            del self.entries[key]
        return sum(1 for _, holder_type, _ in doomed if holds_key(holder_type))


@dataclass
class FakeQueries:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    failure: Exception | None = None

    def last(self) -> tuple[Any, ...]:
        return self.calls[-1]

    def conversation_messages(
        self, tenant_id: str, user_id: str, conversation_id: UUID, limit: int, before: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        self.calls.append(("page", tenant_id, user_id, conversation_id, limit, before))
        if self.failure is not None:
            raise self.failure
        return [{"id": "m1"}], "next-1"

    def delivered_since(
        self, tenant_id: str, user_id: str, since: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        return []

    def search(
        self, tenant_id: str, user_id: str, query: str, conversation_id: UUID | None, limit: int
    ) -> list[dict[str, Any]]:
        self.calls.append(("search", tenant_id, user_id, query, conversation_id, limit))
        return [{"id": "m2"}]


@dataclass
class FakeContainer:
    settings: Settings
    messaging: Messaging
    queries: FakeQueries
    checks: dict[str, bool] = field(default_factory=lambda: {"eventStore": True})

    def readiness(self) -> dict[str, bool]:
        return dict(self.checks)


def make_settings(**changes: Any) -> Settings:
    env = {
        "DATABASE_URL": "postgresql://courier@127.0.0.1:5432/unused",
        "JWT_SECRET": SECRET,
        "ENCRYPTION_MASTER_KEYS": "unused-by-these-tests",
        "MAX_CONTENT_BYTES": str(MAX),
    }
    return load(env).model_copy(update=changes)


# ---- fixtures -------------------------------------------------------------------------


def check_error_shape(response: httpx.Response) -> None:
    """Every answer: never a trace; every error (but a readiness report): the error shape."""
    response.read()
    assert "Traceback" not in response.text
    if response.status_code >= 400 and response.url.path != "/health/ready":
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"code", "message", "details"}, body
        assert body["error"]["code"].replace("_", "").isalpha()
        assert body["error"]["code"] == body["error"]["code"].lower()
        assert isinstance(body["error"]["details"], list)


@pytest.fixture
def container() -> FakeContainer:
    crypto = Crypto(cipher=FakeCipher(), keyring=FakeKeyring(), vault=DictVault())
    messaging = Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return FakeContainer(make_settings(), messaging, FakeQueries())


def admin_probe(request: Request) -> Response:
    principal = authenticate(request, {"admin"})
    return JSONResponse({"user": principal.user_id})


@pytest.fixture
def client(container: FakeContainer) -> Iterator[TestClient]:
    app = create_app(container, extra_routes=[Route("/api/probe/admin", admin_probe)])
    with TestClient(app, raise_server_exceptions=False) as c:
        c.event_hooks["response"] = [check_error_shape]
        yield c


def token(user: str = "alice", tenant: str = TENANT, **claims: Any) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"sub": user, "tenant": tenant, "iat": now, "exp": now + 600}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


def auth(user: str = "alice", tenant: str = TENANT, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, tenant, **claims)}"}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def group(
    client: TestClient, owner: str = "alice", members: tuple[str, ...] = ("bob", "carol")
) -> str:
    r = client.post(
        "/api/conversations",
        json={"type": "group", "participantIds": list(members), "title": "ward 7"},
        headers=auth(owner),
    )
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    return cid


def send_direct(client: TestClient, user: str = "alice", **body: Any) -> httpx.Response:
    payload = {"recipientId": "bob", "content": "hello"}
    payload.update(body)
    return client.post("/api/messages/direct", json=payload, headers=auth(user))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


# ---- auth -----------------------------------------------------------------------------


def test_a_request_without_a_token_is_401_with_www_authenticate(client: TestClient) -> None:
    r = client.get(f"/api/messages/{uuid.uuid4()}")
    assert r.status_code == 401
    assert error_code(r) == "unauthorized"
    assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", [e for e in ENDPOINTS if e.auth], ids=lambda e: e.path)
def test_every_api_route_needs_a_token(client: TestClient, endpoint: Any) -> None:
    path = endpoint.path.replace("{id}", str(uuid.uuid4())).replace("{userId}", "bob")
    r = client.request(endpoint.method, path, json={})
    assert r.status_code == 401, (endpoint.path, r.text)


def test_bad_tokens_are_401(client: TestClient) -> None:
    now = int(time.time())
    claims = {"sub": "alice", "tenant": TENANT, "iat": now, "exp": now + 600}
    forged = jwt.encode(claims, "another-secret-" + "x" * 40, algorithm="HS256")
    expired = token(exp=now - 31 - 5)
    alg_none = _unsigned(claims, {"alg": "none", "typ": "JWT"})
    for bad in ["Basic abc", "Bearer", "Bearer not.a.jwt", f"Bearer {forged}", f"Bearer {expired}"]:
        r = client.get(f"/api/messages/{uuid.uuid4()}", headers={"Authorization": bad})
        assert r.status_code == 401, bad
    r = client.get(f"/api/messages/{uuid.uuid4()}", headers={"Authorization": f"Bearer {alg_none}"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_expiry_has_thirty_seconds_of_leeway(client: TestClient) -> None:
    r = send_direct(client, content="late but fine")
    assert r.status_code == 202
    late = {"Authorization": f"Bearer {token(exp=int(time.time()) - 10)}"}
    r = client.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "x"}, headers=late
    )
    assert r.status_code == 202


@pytest.mark.parametrize("missing", ["sub", "tenant", "exp", "iat"])
def test_a_token_without_sub_tenant_or_exp_is_401(client: TestClient, missing: str) -> None:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "alice", "tenant": TENANT, "iat": now, "exp": now + 60}
    del claims[missing]
    headers = {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}
    r = client.get(f"/api/messages/{uuid.uuid4()}", headers=headers)
    assert r.status_code == 401
    assert missing in r.json()["error"]["message"]


@pytest.mark.parametrize("roles", [["root"], [], "admin", [1]])
def test_roles_outside_the_known_set_are_401(client: TestClient, roles: Any) -> None:
    r = client.get(f"/api/messages/{uuid.uuid4()}", headers=auth(roles=roles))
    assert r.status_code == 401


@pytest.mark.parametrize("claim", [{"sub": 42}, {"tenant": ""}, {"tenant": ["a"]}])
def test_sub_and_tenant_must_be_strings(client: TestClient, claim: dict[str, Any]) -> None:
    r = client.get(f"/api/messages/{uuid.uuid4()}", headers=auth(**claim))
    assert r.status_code == 401


def test_a_missing_role_is_403(client: TestClient) -> None:
    r = client.get("/api/probe/admin", headers=auth())
    assert r.status_code == 403
    assert error_code(r) == "forbidden"
    r = client.get("/api/probe/admin", headers=auth(roles=["auditor", "admin"]))
    assert r.status_code == 200
    assert r.json() == {"user": "alice"}


def test_decode_token_builds_the_context() -> None:
    settings = make_settings()
    principal = decode_token(
        token(roles=["auditor", "user"]),
        settings,
        correlation_id="req-1",
        source_ip="10.0.0.1",
        user_agent="ua",
    )
    assert principal.roles == {"auditor", "user"}
    ctx = principal.context
    assert (ctx.actor_id, ctx.tenant_id, ctx.actor_role) == ("alice", TENANT, "auditor")
    assert (ctx.correlation_id, ctx.source_ip, ctx.user_agent) == ("req-1", "10.0.0.1", "ua")
    assert decode_token(token(), settings).roles == {"user"}
    with pytest.raises(AuthError):
        decode_token("", settings)


def test_mint_token_round_trips() -> None:
    settings = make_settings()
    minted = mint_token(settings, "dora", "t2", ["admin"], 60)
    principal = decode_token(minted, settings)
    assert (principal.user_id, principal.tenant_id, principal.roles) == (
        "dora",
        "t2",
        frozenset({"admin"}),
    )


def test_with_an_rs256_key_only_rs256_is_accepted() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = make_settings(jwt_public_key=public_pem)
    now = int(time.time())
    claims = {"sub": "alice", "tenant": TENANT, "iat": now, "exp": now + 60}
    good = jwt.encode(claims, private, algorithm="RS256")
    assert decode_token(good, settings).user_id == "alice"
    # The classic confusion: HS256 "signed" with the public key as the secret.
    unsigned = _unsigned(claims, {"alg": "HS256", "typ": "JWT"}).rstrip(".")
    mac = hmac.new(public_pem.encode(), unsigned.encode(), hashlib.sha256).digest()
    confused = unsigned + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(AuthError):
        decode_token(confused, settings)
    with pytest.raises(AuthError):
        decode_token(token(), settings)
    with pytest.raises(AuthError):
        mint_token(settings, "alice", TENANT, ["user"], 60)


# ---- conversations --------------------------------------------------------------------


def test_create_a_group_then_add_and_remove_participants(client: TestClient) -> None:
    r = client.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob"], "title": "night shift"},
        headers=auth(),
    )
    assert r.status_code == 201
    conv = r.json()
    assert set(conv) == {"id", "type", "participantIds", "title", "createdAt"}
    assert conv["type"] == "group"
    assert conv["participantIds"] == ["alice", "bob"]
    assert conv["title"] == "night shift"
    url = f"/api/conversations/{conv['id']}/participants"
    r = client.post(url, json={"userIds": ["carol", "dan"]}, headers=auth())
    assert r.status_code == 200
    assert r.json()["participantIds"] == ["alice", "bob", "carol", "dan"]
    r = client.delete(f"{url}/carol", headers=auth())
    assert r.status_code == 200
    assert r.json()["participantIds"] == ["alice", "bob", "dan"]
    assert client.delete(f"{url}/carol", headers=auth()).status_code == 404
    assert client.delete(f"{url}/not%20a%20user", headers=auth()).status_code == 404


def test_a_direct_conversation_is_fixed(client: TestClient) -> None:
    body = {"type": "direct", "participantIds": ["bob"]}
    first = client.post("/api/conversations", json=body, headers=auth())
    again = client.post("/api/conversations", json=body, headers=auth())
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    url = f"/api/conversations/{first.json()['id']}/participants"
    r = client.post(url, json={"userIds": ["carol"]}, headers=auth())
    assert r.status_code == 422
    assert error_code(r) == "validation_error"


def test_conversations_of_others_are_not_found(client: TestClient) -> None:
    cid = group(client)
    url = f"/api/conversations/{cid}/participants"
    for headers in (auth("mallory"), auth("alice", tenant="other")):
        r = client.post(url, json={"userIds": ["mallory"]}, headers=headers)
        assert r.status_code == 404
        assert error_code(r) == "not_found"
    r = client.post(
        "/api/conversations/not-a-uuid/participants", json={"userIds": ["x"]}, headers=auth()
    )
    assert r.status_code == 404
    assert error_code(r) == "not_found"


def test_conversation_messages_checks_membership_then_asks_the_read_side(
    client: TestClient, container: FakeContainer
) -> None:
    cid = group(client)
    r = client.get(f"/api/conversations/{cid}/messages", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json() == {"items": [{"id": "m1"}], "nextCursor": "next-1"}
    assert container.queries.last() == ("page", TENANT, "bob", UUID(cid), 50, None)
    r = client.get(f"/api/conversations/{cid}/messages?limit=200&before=c1", headers=auth())
    assert r.status_code == 200
    assert container.queries.last() == ("page", TENANT, "alice", UUID(cid), 200, "c1")
    calls = len(container.queries.calls)
    for bad in ("0", "201", "ten", "-1", "9" * 50):
        r = client.get(f"/api/conversations/{cid}/messages?limit={bad}", headers=auth())
        assert r.status_code == 422, bad
        assert r.json()["error"]["details"][0]["field"] == "limit"
    for who in (auth("mallory"), auth(tenant="other")):
        assert client.get(f"/api/conversations/{cid}/messages", headers=who).status_code == 404
    assert client.get("/api/conversations/123/messages", headers=auth()).status_code == 404
    assert len(container.queries.calls) == calls


# ---- sending --------------------------------------------------------------------------


def test_send_direct_is_accepted_with_its_first_jobs(client: TestClient) -> None:
    r = send_direct(client)
    assert r.status_code == 202
    body = r.json()
    message = body["message"]
    mid = message["id"]
    assert message["senderId"] == "alice"
    assert message["recipientIds"] == ["bob"]
    assert message["content"] == "hello"
    assert message["type"] == "direct"
    assert message["isEncrypted"] is False
    assert message["status"] == "accepted"
    assert message["recipientCount"] == 1
    assert body["queue"]["jobs"] == [
        {"queue": "MESSAGE_DELIVERY", "jobId": f"MESSAGE_DELIVERY:{mid}:b0", "state": "scheduled"},
        {
            "queue": "MESSAGE_INDEXING",
            "jobId": f"MESSAGE_INDEXING:{mid}:index",
            "state": "scheduled",
        },
    ]
    r = send_direct(client, index=False, notify=False)
    jobs = [j["queue"] for j in r.json()["queue"]["jobs"]]
    assert jobs == ["MESSAGE_DELIVERY"]


def test_send_group_is_accepted_with_a_split_job(client: TestClient) -> None:
    cid = group(client)
    r = client.post(
        "/api/messages/group",
        json={"conversationId": cid, "content": "rounds at 9"},
        headers=auth(),
    )
    assert r.status_code == 202
    message = r.json()["message"]
    mid = message["id"]
    assert message["conversationId"] == cid
    assert message["recipientCount"] == 2
    assert r.json()["queue"]["jobs"][0]["jobId"] == f"BATCH_MESSAGE_SENDING:{mid}:split"
    r = client.post(
        "/api/messages/group", json={"conversationId": cid, "content": "x"}, headers=auth("mallory")
    )
    assert r.status_code == 404
    r = client.post(
        "/api/messages/group", json={"conversationId": "nope", "content": "x"}, headers=auth()
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "conversationId"


def test_a_client_message_id_makes_a_send_idempotent(client: TestClient) -> None:
    first = send_direct(client, clientMessageId="c-1")
    again = send_direct(client, clientMessageId="c-1")
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert again.json()["queue"] == first.json()["queue"]
    changed = send_direct(client, clientMessageId="c-1", content="something else")
    assert changed.status_code == 409
    assert error_code(changed) == "conflict"


def test_content_is_limited_in_utf8_bytes(client: TestClient) -> None:
    at_limit = "é" * (MAX // 2)
    assert len(at_limit.encode()) == MAX
    assert send_direct(client, content=at_limit).status_code == 202
    r = send_direct(client, content=at_limit + "x")
    assert r.status_code == 413
    assert error_code(r) == "content_too_large"
    escaped = b"\\u0001" * MAX  # at the limit, however it is escaped
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "' + escaped + b'"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 202
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "' + b"a" * message_body_limit(MAX) + b'"}',
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert error_code(r) == "content_too_large"


def test_encrypted_sends(client: TestClient) -> None:
    r = send_direct(client, encrypted=True)
    assert r.status_code == 422
    assert error_code(r) == "recipient_key_missing"
    for user in ("alice", "bob"):
        r = client.put("/api/keys/me", json={"publicKeyPem": PEM.format(user)}, headers=auth(user))
        assert r.status_code == 200
    r = send_direct(client, encrypted=True)
    assert r.status_code == 202
    message = r.json()["message"]
    assert message["isEncrypted"] is True
    assert message["content"] is None
    assert r.json()["queue"]["jobs"][0]["jobId"] == f"MESSAGE_ENCRYPTION:{message['id']}:seal"


def test_a_sealed_message_and_its_envelope(client: TestClient) -> None:
    sealed = {
        "ciphertext": _b64(b"opaque"),
        "iv": _b64(b"i" * 12),
        "authTag": _b64(b"t" * 16),
        "wrappedKeys": {"alice": _b64(b"ka"), "bob": _b64(b"kb")},
    }
    r = send_direct(client, content=None, sealed=sealed)
    assert r.status_code == 202, r.text
    mid = r.json()["message"]["id"]
    assert r.json()["message"]["isEncrypted"] is True
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 200
    envelope = r.json()
    assert envelope["wrappedKey"] == _b64(b"kb")
    assert envelope["ciphertext"] == sealed["ciphertext"]
    assert envelope["algorithm"] == "AES-256-GCM"
    assert client.get(f"/api/messages/{mid}/envelope", headers=auth("carol")).status_code == 404
    r = send_direct(client, content=None, sealed=sealed, encrypted=False)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "encrypted"
    r = send_direct(client, sealed=sealed)
    assert r.status_code == 422
    r = send_direct(client, content=None, sealed={**sealed, "iv": "not base64!"})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "sealed.iv"
    for name, size in (("iv", 16), ("authTag", 12)):
        r = send_direct(client, content=None, sealed={**sealed, name: _b64(b"x" * size)})
        assert r.status_code == 422
        assert r.json()["error"]["details"][0]["field"] == f"sealed.{name}"
    r = send_direct(client, content=None, sealed={**sealed, "wrappedKeys": {"alice": _b64(b"ka")}})
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "sealed.wrappedKeys", "issue": "missing for bob"}
    ]


def test_shredding_needs_an_admin_and_turns_the_envelope_into_410(client: TestClient) -> None:
    for user in ("alice", "bob"):
        client.put("/api/keys/me", json={"publicKeyPem": PEM.format(user)}, headers=auth(user))
    mid = send_direct(client, encrypted=True).json()["message"]["id"]
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 409 and error_code(r) == "not_ready"
    shred = f"/api/messages/{mid}/shred"
    assert client.post(shred, json={}, headers=auth("alice")).status_code == 403
    admin = auth("dpo", roles=["admin"])
    r = client.post(shred, json={"reason": "because"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "reason"
    r = client.post(shred, json={"reason": "erasure"}, headers=admin)
    assert r.status_code == 200
    assert r.json() == {"messageId": mid, "shredded": True, "reason": "erasure", "keysDestroyed": 1}
    r = client.get(f"/api/messages/{mid}/envelope", headers=auth("bob"))
    assert r.status_code == 410 and error_code(r) == "content_shredded"
    assert "destroyed" in r.json()["error"]["message"]
    assert client.get(f"/api/messages/{mid}", headers=auth("bob")).status_code == 200
    other_tenant = auth("dpo", tenant="other", roles=["admin"])
    assert client.post(shred, json={}, headers=other_tenant).status_code == 404
    plain = send_direct(client).json()["message"]["id"]
    r = client.post(f"/api/messages/{plain}/shred", json={}, headers=admin)
    assert r.status_code == 422


# ---- malformed requests ---------------------------------------------------------------


def test_malformed_bodies(client: TestClient) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    for raw in (b"{", b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"null", b"[" * 5000):
        r = client.post("/api/messages/direct", content=raw, headers=headers)
        assert r.status_code == 400, raw[:10]
        assert error_code(r) == "invalid_json"
    r = client.post(
        "/api/messages/direct",
        content=b'{"recipientId": "bob", "content": "x"}',
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert r.status_code == 415
    assert error_code(r) == "unsupported_media_type"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "x"}, "recipientId"),
        ({"recipientId": "bob", "content": "x", "encrypted": "yes"}, "encrypted"),
        ({"recipientId": "bob", "content": "x", "notify": "true"}, "notify"),
        ({"recipientId": "bob", "content": "x", "surprise": 1}, "surprise"),
        ({"recipientId": "bob"}, "content"),
        ({"recipientId": "bob", "content": 7}, "content"),
        ({"recipientId": "bob bob", "content": "x"}, "recipientId"),
        ({"recipientId": "bob", "content": "x", "clientMessageId": ""}, "clientMessageId"),
        ({"recipient_id": "bob", "content": "x"}, "recipientId"),
    ],
)
def test_invalid_send_bodies_are_422_with_details(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    r = client.post("/api/messages/direct", json=body, headers=auth())
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [d["field"] for d in error["details"]]
    assert all(set(d) == {"field", "issue"} for d in error["details"])
    assert "yes" not in json.dumps(error["details"])


@pytest.mark.parametrize(
    "body",
    [
        {"type": "channel", "participantIds": ["bob"]},
        {"type": "group", "participantIds": []},
        {"type": "group", "participantIds": ["bob"], "title": "t" * 201},
        {"type": "group", "participantIds": "bob"},
    ],
)
def test_invalid_conversation_bodies_are_422(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/api/conversations", json=body, headers=auth())
    assert r.status_code == 422


# ---- reading --------------------------------------------------------------------------


def test_reading_a_message(client: TestClient) -> None:
    mid = send_direct(client).json()["message"]["id"]
    r = client.get(f"/api/messages/{mid}", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json()["id"] == mid
    r = client.post(f"/api/messages/{mid}/read", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json()["id"] == mid
    r = client.post(f"/api/messages/{mid}/read", headers=auth("alice"))
    assert r.status_code == 403
    assert error_code(r) == "forbidden"


def test_messages_that_cannot_be_seen_are_not_found(client: TestClient) -> None:
    mid = send_direct(client).json()["message"]["id"]
    for path, headers in [
        (f"/api/messages/{uuid.uuid4()}", auth()),
        ("/api/messages/not-a-uuid", auth()),
        ("/api/messages/direct", auth()),
        (f"/api/messages/{mid}", auth("carol")),
        (f"/api/messages/{mid}", auth("bob", tenant="other")),
        (f"/api/messages/{mid}/envelope", auth("bob", tenant="other")),
    ]:
        r = client.get(path, headers=headers)
        assert r.status_code == 404, path
        assert error_code(r) == "not_found"
    r = client.post(f"/api/messages/{mid}/read", headers=auth("bob", tenant="other"))
    assert r.status_code == 404


def test_search(client: TestClient, container: FakeContainer) -> None:
    cid = str(uuid.uuid4())
    r = client.get(f"/api/search?q=rounds&conversationId={cid}", headers=auth())
    assert r.status_code == 200
    assert r.json() == {"items": [{"id": "m2"}]}
    assert container.queries.last() == ("search", TENANT, "alice", "rounds", UUID(cid), 50)
    for query in ("", "?q=", "?q=" + "x" * 201, "?q=a&conversationId=zzz"):
        r = client.get(f"/api/search{query}", headers=auth())
        assert r.status_code == 422, query


def test_public_keys(client: TestClient) -> None:
    pem = PEM.format("bob")
    r = client.put("/api/keys/me", json={"publicKeyPem": pem}, headers=auth("bob"))
    assert r.status_code == 200
    registered = r.json()
    assert set(registered) == {"keyId", "fingerprint", "createdAt"}
    r = client.get("/api/keys/bob", headers=auth())
    assert r.status_code == 200
    assert r.json() == {
        "userId": "bob",
        "keyId": registered["keyId"],
        "publicKeyPem": pem,
        "fingerprint": registered["fingerprint"],
    }
    assert client.get("/api/keys/bob", headers=auth(tenant="other")).status_code == 404
    assert client.get("/api/keys/nobody", headers=auth()).status_code == 404
    assert client.get("/api/keys/no%20body", headers=auth()).status_code == 404
    r = client.put("/api/keys/me", json={"publicKeyPem": "garbage"}, headers=auth())
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "publicKeyPem"
    r = client.put("/api/keys/me", json={"publicKeyPem": "x" * 20_001}, headers=auth())
    assert r.status_code == 422


def test_a_replaced_public_key_stays_resolvable_by_its_key_id(client: TestClient) -> None:
    first = client.put("/api/keys/me", json={"publicKeyPem": PEM.format("1")}, headers=auth())
    second = client.put("/api/keys/me", json={"publicKeyPem": PEM.format("2")}, headers=auth())
    old_id, new_id = first.json()["keyId"], second.json()["keyId"]
    assert client.get("/api/keys/alice", headers=auth("bob")).json()["keyId"] == new_id
    r = client.get(f"/api/keys/alice/{old_id}", headers=auth("bob"))
    assert r.status_code == 200
    assert r.json()["keyId"] == old_id and r.json()["publicKeyPem"] == PEM.format("1")
    assert client.get("/api/keys/alice/k_unknown", headers=auth("bob")).status_code == 404
    assert client.get(f"/api/keys/alice/{old_id}", headers=auth(tenant="x")).status_code == 404


# ---- routing, ops, failures -----------------------------------------------------------


def test_unknown_routes_and_methods(client: TestClient) -> None:
    r = client.get("/api/nothing-here", headers=auth())
    assert r.status_code == 404
    assert error_code(r) == "not_found"
    r = client.put("/api/messages/direct", headers=auth())
    assert r.status_code == 405
    assert error_code(r) == "method_not_allowed"
    assert "POST" in r.headers["Allow"]


def test_health(client: TestClient, container: FakeContainer) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    r = client.get("/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"eventStore": True}}
    container.checks["readStore"] = False
    r = client.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"
    assert r.json()["checks"]["readStore"] is False


def test_openapi_lists_every_route(client: TestClient) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    for endpoint in ENDPOINTS:
        assert endpoint.method.lower() in doc["paths"][endpoint.path]
    schemas = doc["components"]["schemas"]
    assert {"CreateConversation", "SendDirect", "SendGroup", "Sealed", "Error"} <= set(schemas)
    assert "participantIds" in schemas["CreateConversation"]["properties"]
    assert schemas["SendDirect"]["additionalProperties"] is False
    op = doc["paths"]["/api/messages/direct"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("SendDirect")
    assert "security" not in doc["paths"]["/health/live"]["get"]


def test_headers_on_every_answer(client: TestClient) -> None:
    r = client.get("/api/messages/x", headers={**auth(), "X-Request-ID": "req-42"})
    assert r.headers["X-Request-ID"] == "req-42"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Content-Type"] == "application/json"
    r = client.get("/health/live", headers={"X-Request-ID": "bad id\twith junk"})
    assert r.headers["X-Request-ID"] != "bad id\twith junk"
    assert len(r.headers["X-Request-ID"]) == 32
    assert "Cache-Control" not in r.headers


def test_the_request_id_and_caller_reach_the_events(
    client: TestClient, container: FakeContainer
) -> None:
    headers = {**auth(), "X-Request-ID": "req-77", "User-Agent": "ward-tablet/2"}
    r = client.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "x"}, headers=headers
    )
    created = next(iter(container.messaging.events.get(UUID(r.json()["message"]["id"]))))
    meta: dict[str, str] = getattr(created, "meta", {})
    assert meta["correlation_id"] == "req-77"
    assert meta["actor_id"] == "alice"
    assert meta["tenant_id"] == TENANT
    assert meta["user_agent"] == "ward-tablet/2"
    assert meta["source_ip"] == "testclient"


def test_unexpected_errors_are_a_generic_500(
    client: TestClient, container: FakeContainer, caplog: pytest.LogCaptureFixture
) -> None:
    cid = group(client)
    container.queries.failure = RuntimeError("secret internals at /srv/db")
    with caplog.at_level(logging.ERROR, logger="courier.http"):
        r = client.get(f"/api/conversations/{cid}/messages", headers=auth())
    assert r.status_code == 500
    assert error_code(r) == "internal_error"
    assert "secret internals" not in r.text
    assert any(rec.exc_info for rec in caplog.records)


@pytest.mark.parametrize(
    "outage",
    [
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("down")),
        persistence.OperationalError("down"),
        persistence.InterfaceError("closed"),
        psycopg.OperationalError("down"),
    ],
    ids=lambda e: type(e).__module__.split(".")[0],
)
def test_a_database_outage_is_503(
    client: TestClient, container: FakeContainer, outage: Exception
) -> None:
    cid = group(client)
    container.queries.failure = outage
    r = client.get(f"/api/conversations/{cid}/messages", headers=auth())
    assert r.status_code == 503
    assert error_code(r) == "service_unavailable"
    assert r.headers["Retry-After"] == "2"


# ---- logs -----------------------------------------------------------------------------


def test_tokens_are_redacted_from_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/ws?since=3&token=eyJ.abc.def&x=1", "1.1", 101),
        None,
    )
    assert RedactTokens().filter(record)
    message = record.getMessage()
    assert "eyJ" not in message
    assert "token=[redacted]&x=1" in message
    assert message.endswith(" 101")
    record = logging.LogRecord(
        "courier", logging.INFO, __file__, 1, "Authorization: Bearer abc.def-ghi", None, None
    )
    RedactTokens().filter(record)
    assert "abc.def" not in record.getMessage()


def test_install_log_redaction_attaches_to_the_handlers() -> None:
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_redaction()
        install_log_redaction()
        assert sum(isinstance(f, RedactTokens) for f in handler.filters) == 1
        assert any(isinstance(f, RedactTokens) for f in logging.getLogger("uvicorn.access").filters)
    finally:
        root.removeHandler(handler)
        for name in ("", "uvicorn.access", "uvicorn.error"):
            logger = logging.getLogger(name or None)
            for f in [f for f in logger.filters if isinstance(f, RedactTokens)]:
                logger.removeFilter(f)


# ---- the document's answers, roles, limits ---------------------------------------------


def test_openapi_documents_every_answer_and_role(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for endpoint in ENDPOINTS:
        operation = doc["paths"][endpoint.path][endpoint.method.lower()]
        answer = operation["responses"][str(endpoint.status)]
        if endpoint.status == 204:
            assert "content" not in answer
        else:
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[-1] in schemas, endpoint.path
        assert "default" in operation["responses"]
        if endpoint.auth:
            assert operation["x-roles"] == list(endpoint.roles)
    assert schemas["Message"]["additionalProperties"] is False
    assert set(schemas["Message"]["required"]) >= {"id", "status", "content", "isEncrypted"}


def test_a_value_the_store_refuses_is_422(client: TestClient, container: FakeContainer) -> None:
    cid = group(client)
    container.queries.failure = psycopg.DataError("bigint out of range")
    r = client.get(f"/api/conversations/{cid}/messages", headers=auth())
    assert r.status_code == 422
    assert error_code(r) == "unstorable_value"


def test_nul_in_a_body_or_query_is_422(client: TestClient) -> None:
    r = send_direct(client, content="a\x00b")
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "content", "issue": "must not contain the NUL character (U+0000)"}
    ]
    r = client.get("/api/search", params={"q": "\x00"}, headers=auth())
    assert r.status_code == 422
    r = client.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "sealed": None, "content": "x", "clientMessageId": "a\x00"},
        headers=auth(),
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "clientMessageId"


def test_checks_run_in_order_token_then_rate_then_role(container: FakeContainer) -> None:
    from infrastructure.ratelimit import LocalWindows, RateLimiter, Rule

    limiter = RateLimiter(LocalWindows(), Rule(2, 60.0), Rule(0, 60.0))
    app = create_app(container, limiter=limiter)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/api/messages/queue/metrics").status_code == 401
        statuses = [c.get("/api/messages/queue/metrics", headers=auth()).status_code]
        statuses += [c.get("/api/messages/queue/metrics", headers=auth()).status_code]
        third = c.get("/api/messages/queue/metrics", headers=auth())
    assert statuses == [403, 403]
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(third.headers["Retry-After"]) <= 60
