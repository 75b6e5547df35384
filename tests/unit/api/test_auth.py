"""The HTTP API: tokens, roles, and the order of the checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from interfaces.http.app import ENDPOINTS, create_app
from interfaces.http.auth import AuthError, decode_token, mint_token
from tests.unit.api.fakes import (
    SECRET,
    TENANT,
    FakeContainer,
    auth,
    error_code,
    make_settings,
    send_direct,
    token,
)


def _unsigned(claims: dict[str, Any], header: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


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
