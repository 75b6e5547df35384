"""Fakes and helpers for the HTTP API in-process: a real Messaging on the memory store,
fakes for the rest (tests/unit/api/conftest.py makes the app)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx2 as httpx
import jwt
from starlette.testclient import TestClient

from application.messaging import Messaging
from application.ports import (
    InvalidPublicKey,
    PublicKeyInfo,
    SealedContent,
    VaultEntry,
    WrapFormat,
    holds_key,
)
from infrastructure.settings import Settings, load

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
