"""The HTTP API: users' public keys."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.unit.api.fakes import (
    PEM,
    auth,
)


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
