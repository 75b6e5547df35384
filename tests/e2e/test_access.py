"""Who may do what, against a real server: tokens that must not pass, another tenant's
real ids on every documented operation, and every role boundary (docs/API.md §3)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e.conftest import FAST
from tests.e2e.harness import JWT_SECRET, Runtime, auth, wait_for
from tests.e2e.walk import Call, Ids, calls, random_ids
from tests.recipient import public_pem

pytestmark = pytest.mark.e2e

LEEWAY = 5
EVERY_ROLE = ["user", "admin", "auditor"]
ENV = {
    **FAST,
    "JWT_LEEWAY_SECONDS": str(LEEWAY),
    "FAULT_INJECT": "MESSAGE_INDEXING:always",
    "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp: Path = tmp_path_factory.mktemp("access")
    runtime = Runtime("embedded", {**ENV, "COURIER_DATA_DIR": str(tmp / "var")}, tmp).start()
    yield runtime
    runtime.stop()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any] | str, key: bytes | None) -> str:
    """A JWT built by hand (PyJWT refuses to make the hostile ones); HMAC-SHA256 if keyed."""
    body = claims if isinstance(claims, str) else json.dumps(claims)
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(body.encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64url(signature)}"


def hand_made_hs512(claims: dict[str, Any], key: bytes) -> str:
    header = b64url(json.dumps({"alg": "HS512", "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64url(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": "alice",
        "tenant": "t1",
        "roles": ["user"],
        "iat": now,
        "exp": now + 600,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def status_with(runtime: Runtime, token: str) -> int:
    response = runtime.http.get(
        f"/api/messages/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"}
    )
    if response.status_code == 401:
        body = response.json()
        assert body["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    return response.status_code


# ---- tokens ----------------------------------------------------------------------------


def test_tokens_that_must_not_pass(server: Runtime) -> None:
    secret = JWT_SECRET.encode()
    now = int(time.time())
    hs = {"alg": "HS256", "typ": "JWT"}
    refused = {
        "alg none": hand_made({"alg": "none", "typ": "JWT"}, claims(), None),
        "alg None": hand_made({"alg": "None"}, claims(), None),
        "alg NONE, signed": hand_made({"alg": "NONE"}, claims(), secret),
        "HS512 with the right secret": hand_made_hs512(claims(), secret),
        "wrong secret": jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256"),
        "no exp": jwt.encode(claims(exp=None), JWT_SECRET, algorithm="HS256"),
        "no iat": jwt.encode(claims(iat=None), JWT_SECRET, algorithm="HS256"),
        # Outside production (this server) a token may live a day (JWT_MAX_LIFETIME_SECONDS).
        "lives 2 days": jwt.encode(claims(iat=now, exp=now + 172_800), JWT_SECRET, "HS256"),
        "lived long": jwt.encode(claims(iat=now - 86_400, exp=now + 60), JWT_SECRET, "HS256"),
        "exp a string": hand_made(hs, claims(exp="tomorrow"), secret),
        "exp infinite": hand_made(hs, json.dumps(claims())[:-1] + ', "exp": 1e400}', secret),
        "exp past the leeway": jwt.encode(claims(exp=now - LEEWAY - 5), JWT_SECRET, "HS256"),
        "nbf in the future": jwt.encode(claims(nbf=now + LEEWAY + 60), JWT_SECRET, "HS256"),
        "iat in the future": jwt.encode(claims(iat=now + LEEWAY + 60), JWT_SECRET, "HS256"),
        "nbf not a number": hand_made(hs, claims(nbf="soon"), secret),
        "no sub": jwt.encode(claims(sub=None), JWT_SECRET, "HS256"),
        "no tenant": jwt.encode(claims(tenant=None), JWT_SECRET, "HS256"),
        "tenant a number": jwt.encode(claims(tenant=7), JWT_SECRET, "HS256"),
        "tenant a list": jwt.encode(claims(tenant=["t1", "t2"]), JWT_SECRET, "HS256"),
        "tenant an object": jwt.encode(claims(tenant={"id": "t1"}), JWT_SECRET, "HS256"),
        "tenant true": jwt.encode(claims(tenant=True), JWT_SECRET, "HS256"),
        "tenant empty": jwt.encode(claims(tenant=""), JWT_SECRET, "HS256"),
        "tenant huge": jwt.encode(claims(tenant="t" * 300), JWT_SECRET, "HS256"),
        "sub a number": jwt.encode(claims(sub=42), JWT_SECRET, "HS256"),
        "roles unknown": jwt.encode(claims(roles=["root"]), JWT_SECRET, "HS256"),
        "roles a string": jwt.encode(claims(roles="admin"), JWT_SECRET, "HS256"),
        "huge token": jwt.encode(claims(pad="x" * 9000), JWT_SECRET, "HS256"),
        "claims not an object": hand_made(hs, "[1, 2, 3]", secret),
        "claims not JSON": hand_made(hs, "{not json", secret),
        "four segments": jwt.encode(claims(), JWT_SECRET, "HS256") + ".extra",
        "garbage": "a.b.c",
    }
    answers = {name: status_with(server, value) for name, value in refused.items()}
    assert answers == dict.fromkeys(refused, 401)


def test_clock_skew_within_the_leeway_is_tolerated(server: Runtime) -> None:
    now = int(time.time())
    tolerated = {
        "expired a moment ago": claims(exp=now - LEEWAY + 3),
        "nbf a moment ahead": claims(nbf=now + LEEWAY - 3),
        "iat a moment ahead": claims(iat=now + LEEWAY - 3),
    }
    for name, body in tolerated.items():
        assert status_with(server, jwt.encode(body, JWT_SECRET, "HS256")) == 404, name


def test_with_a_public_key_only_rs256_tokens_pass(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    env = {**FAST, "COURIER_DATA_DIR": str(tmp_path / "var"), "JWT_PUBLIC_KEY": pem.decode()}
    runtime = Runtime("embedded", env, tmp_path).start()
    try:
        good = jwt.encode(claims(), private, algorithm="RS256")
        assert status_with(runtime, good) == 404  # let in: the message does not exist
        hs = {"alg": "HS256", "typ": "JWT"}
        forged = {
            # The classic confusion: HS256 "signed" with the public key as the secret.
            "HS256 keyed with the public key": hand_made(hs, claims(), pem),
            "HS256 keyed with the PEM text stripped": hand_made(hs, claims(), pem.strip()),
            "HS256 with JWT_SECRET": jwt.encode(claims(), JWT_SECRET, algorithm="HS256"),
            "alg none": hand_made({"alg": "none"}, claims(), None),
            "RS256 by another key": jwt.encode(
                claims(), rsa.generate_private_key(65537, 2048), algorithm="RS256"
            ),
        }
        answers = {name: status_with(runtime, value) for name, value in forged.items()}
        assert answers == dict.fromkeys(forged, 401)
    finally:
        runtime.stop()


# ---- another tenant's ids ---------------------------------------------------------------


def tenant_a(runtime: Runtime) -> Ids:
    """Real data in clinic-a: a group, an encrypted message, a key, a failed job, a hold."""
    http = runtime.http
    owner = auth("alice", "clinic-a", EVERY_ROLE)
    keys = {}
    for user in ("alice", "bob"):
        response = http.put(
            "/api/keys/me", json={"publicKeyPem": public_pem(user)}, headers=auth(user, "clinic-a")
        )
        keys[user] = response.json()["keyId"]
    group = http.post(
        "/api/conversations", json={"type": "group", "participantIds": ["bob"]}, headers=owner
    ).json()["id"]
    sent = http.post(
        "/api/messages/group",
        json={"conversationId": group, "content": "hello from a", "encrypted": True},
        headers=owner,
    )
    assert sent.status_code == 202, sent.text
    message = sent.json()["message"]["id"]
    hold = http.put(f"/api/audit/conversations/{group}/hold", json={"reason": "a"}, headers=owner)
    assert hold.status_code == 200, hold.text

    def failed() -> list[str]:
        url = "/api/messages/queue/MESSAGE_INDEXING/failed"
        return [item["jobId"] for item in http.get(url, headers=owner).json()["items"]]

    job = wait_for(failed, 30, "clinic-a's failed indexing job")[0]
    wait_for(
        lambda: (
            runtime.message("alice", message, "clinic-a")["isEncrypted"]
            and runtime.message("alice", message, "clinic-a")["encryptionMetadata"]
        ),
        30,
        "the message to be sealed",
    )
    return Ids(
        conversation=group,
        message=message,
        user="bob",
        key=keys["bob"],
        job=job,
        pem=public_pem("intruder"),
    )


def answer(call: Call, http: httpx.Client, headers: dict[str, str]) -> tuple[int, str]:
    response = call.send(http, headers)
    assert response.status_code < 500, (call.label, response.text)
    return response.status_code, response.text


def test_another_tenants_real_ids_are_not_found_on_every_operation(server: Runtime) -> None:
    http = server.http
    real = tenant_a(server)
    document = http.get("/openapi.json").json()
    intruder = auth("alice", "clinic-b", EVERY_ROLE)  # same user name, another tenant
    nothing = random_ids(real.pem)
    leaks = []
    for with_real, with_nothing in zip(
        calls(document, real), calls(document, nothing), strict=True
    ):
        status, text = answer(with_real, http, intruder)
        baseline, _ = answer(with_nothing, http, intruder)
        secrets = (real.conversation, real.message, real.key, real.job, "clinic-a", "hello from a")
        seen = [s for s in secrets if s in text and s not in with_real.path]
        if with_real.has_path_id and with_real.template not in OWN_NAMESPACE:
            expected = 404
        else:
            expected = baseline  # what the same call answers about ids that do not exist
        if status != expected or seen or status == 403:
            leaks.append(f"{with_real.label}: {status} (expected {expected}), shows {seen}")
    assert not leaks, "\n".join(leaks)
    # Nothing the intruder did changed clinic-a: its message is whole, its hold in place.
    owner = auth("alice", "clinic-a", EVERY_ROLE)
    envelope = http.get(f"/api/messages/{real.message}/envelope", headers=owner)
    assert envelope.status_code == 200, envelope.text
    holds = http.get("/api/audit/holds", headers=owner).json()["items"]
    assert [h["conversationId"] for h in holds] == [real.conversation]


# These answer about the caller's own tenant whatever the id: user ids and queue names are
# not tenant data (another tenant's "bob" is somebody else; the queues are the service's),
# and an auditor's trail of an id lists what the auditor's tenant recorded about it (its
# own refused attempts included). A foreign id answers exactly as one that never existed.
OWN_NAMESPACE = {
    "/api/audit/users/{userId}/access",
    "/api/audit/messages/{id}/trail",
    "/api/messages/queue/{name}/health",
    "/api/messages/queue/{name}/failed",
}


# ---- roles -------------------------------------------------------------------------------


def spec_roles(method: str, template: str) -> tuple[str, ...]:
    """docs/API.md §3: admin alone reaches the queues (and shredding), auditor alone the audit."""
    if template.startswith("/api/messages/queue/") or template == "/api/messages/{id}/shred":
        return ("admin",)
    if template.startswith("/api/audit/"):
        return ("auditor",)
    return ("user",)


def test_every_role_boundary_of_the_document(server: Runtime) -> None:
    http = server.http
    document = http.get("/openapi.json").json()
    walked = calls(document, random_ids(public_pem("walker")))
    secured = [c for c in walked if c.needs_auth]
    assert {c.template for c in walked if not c.needs_auth} == {
        "/health/live",
        "/health/ready",
        "/openapi.json",
    }
    wrong = []
    for call in secured:
        if call.roles != spec_roles(call.method, call.template):
            wrong.append(f"{call.label}: documented {call.roles}")
        if call.send(http, {}).status_code != 401:
            wrong.append(f"{call.label}: answers without a token")
        for role in ("user", "admin", "auditor"):
            response = call.send(http, auth(f"walker-{role}", "walk", [role]))
            allowed = role in call.roles
            if allowed and response.status_code in (401, 403):
                wrong.append(f"{call.label}: refuses {role} ({response.status_code})")
            if not allowed and response.status_code != 403:
                wrong.append(f"{call.label}: lets {role} in ({response.status_code})")
            if not allowed and response.json()["error"]["code"] != "forbidden":
                wrong.append(f"{call.label}: 403 without the error format")
        everyone = call.send(http, auth("walker-all", "walk", EVERY_ROLE))
        if everyone.status_code in (401, 403):
            wrong.append(f"{call.label}: refuses a holder of every role")
    assert not wrong, "\n".join(wrong)


def test_a_token_without_roles_is_a_user_and_nothing_more(server: Runtime) -> None:
    http = server.http
    plain = jwt.encode(claims(sub="norole", tenant="walk", roles=None), JWT_SECRET, "HS256")
    headers = {"Authorization": f"Bearer {plain}"}
    assert http.get("/api/users/me/notifications", headers=headers).status_code == 200
    assert http.get("/api/messages/queue/metrics", headers=headers).status_code == 403
    assert http.get("/api/audit/verify", headers=headers).status_code == 403
