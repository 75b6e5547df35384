"""Encrypted messages over real HTTP: Python and WebCrypto recipients, end-to-end
sealing from Node, and plaintext found nowhere the service keeps anything."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kombu import Connection

from application.jobs import QUEUES
from tests.conftest import PG_DSN, unavailable
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, connected, token, wait_for
from tests.e2e.sealing import envelope, node, register_keys, restart, send_encrypted
from tests.recipient import open_envelope, private_key, private_pkcs8_pem, unb64

pytestmark = pytest.mark.e2e


def test_a_recipient_opens_the_envelope_and_any_tampering_fails(runtime: Runtime) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    weak_pem = weak.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    for pem in (weak_pem, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
        r = runtime.http.put("/api/keys/me", json={"publicKeyPem": pem}, headers=auth("alice"))
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "publicKeyPem"
    assert (
        "4096"
        in runtime.http.put(
            "/api/keys/me", json={"publicKeyPem": weak_pem}, headers=auth("alice")
        ).json()["error"]["message"]
    )

    ids = register_keys(runtime, "alice", "bob")
    published = runtime.http.get("/api/keys/bob", headers=auth("alice")).json()
    spki = (
        private_key("bob")
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert published["fingerprint"] == hashlib.sha256(spki).hexdigest()
    assert published["keyId"] == ids["bob"]

    refused = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "carol", "content": "x", "encrypted": True},
        headers=auth("alice"),
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "recipient_key_missing"
    assert "carol" in refused.json()["error"]["message"]

    text = "Potassium 6.1 mmol/L — repeat bloods ✓"
    message_id = send_encrypted(runtime, "alice", "bob", text)
    done = runtime.wait_done("alice", message_id)
    assert done["content"] is None and done["isEncrypted"] is True
    assert done["encryptionVersion"] == "v1"
    metadata = done["encryptionMetadata"]
    assert set(metadata) == {"algorithm", "iv", "authTag", "keyId"}
    assert metadata["algorithm"] == "AES-256-GCM"

    sealed = envelope(runtime, "bob", message_id)
    assert sealed["messageId"] == message_id
    assert (sealed["iv"], sealed["authTag"]) == (metadata["iv"], metadata["authTag"])
    assert sealed["recipientKeyId"] == ids["bob"] and sealed["encryptionVersion"] == "v1"
    assert open_envelope("bob", sealed).decode("utf-8") == text
    for part in ("aad", "iv", "authTag"):
        original = unb64(sealed[part])
        with pytest.raises(InvalidTag):
            open_envelope("bob", sealed, **{part: bytes([original[0] ^ 0x80]) + original[1:]})
    with pytest.raises(ValueError):  # bob's key does not unwrap alice's copy
        open_envelope("bob", envelope(runtime, "alice", message_id))

    outsider = runtime.http.get(f"/api/messages/{message_id}/envelope", headers=auth("carol"))
    assert outsider.status_code == 404
    other_tenant = runtime.http.get(
        f"/api/messages/{message_id}/envelope", headers=auth("bob", "clinic-b")
    )
    assert other_tenant.status_code == 404


def test_a_webcrypto_client_reads_what_the_server_sealed_and_seals_for_python(
    embedded: Runtime,
) -> None:
    register_keys(embedded, "alice", "bob")
    text = "Ward 4: bed 12 needs a sliding scale — 🩺"
    message_id = send_encrypted(embedded, "alice", "bob", text)
    embedded.wait_done("alice", message_id)

    opened = node(
        "open",
        embedded,
        {
            "token": token("bob"),
            "messageId": message_id,
            "privateKeyPem": private_pkcs8_pem("bob"),
        },
    )
    assert opened["plaintext"] == text
    assert opened["alteredAadRejected"] is True

    reply = "Sealed in JavaScript; the server never saw this 🔒"
    sent = node(
        "send",
        embedded,
        {
            "token": token("alice"),
            "senderId": "alice",
            "recipientId": "bob",
            "plaintext": reply,
            "aad": "courier:e2e:alice:reply-1",
            "clientMessageId": "reply-1",
        },
    )
    assert sent["status"] == 202, sent["body"]
    e2e_id = sent["body"]["message"]["id"]
    assert sent["body"]["message"]["isEncrypted"] is True
    assert sent["body"]["queue"]["jobs"][0]["queue"] == "MESSAGE_DELIVERY"  # nothing to seal
    embedded.wait_done("alice", e2e_id)

    returned = envelope(embedded, "bob", e2e_id)
    for field in ("ciphertext", "iv", "authTag", "aad"):
        assert returned[field] == sent["sealed"][field]
    assert returned["wrappedKey"] == sent["sealed"]["wrappedKeys"]["bob"]
    assert open_envelope("bob", returned).decode("utf-8") == reply
    assert unb64(returned["aad"]) == b"courier:e2e:alice:reply-1"


# ---- plaintext is nowhere ----------------------------------------------------------------


@pytest.fixture(params=["redis", "rabbitmq"])
def sealed_runtime(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: str, redis_url: str
) -> Iterator[Runtime]:
    """The services runtime, with Redis or RabbitMQ as its broker."""
    env = services_env(pg_schema, redis_url)
    env["HTTP_ACCESS_LOG"] = "1"  # request lines in the log, to be searched for plaintext
    if request.param == "rabbitmq":
        env["BROKER_URL"] = request.getfixturevalue("amqp_url")
    runtime = Runtime("services", env, tmp_path)
    runtime.start()
    yield runtime
    runtime.stop()


def redis_dump(url: str) -> str:
    """Every key and value of the test's Redis database, as text."""
    client = redis.Redis.from_url(url)
    parts: list[Any] = []
    try:
        for key in client.scan_iter(count=500):
            kind = client.type(key).decode()
            parts.append(key)
            if kind == "string":
                parts.append(client.get(key))
            elif kind == "list":
                parts.extend(client.lrange(key, 0, -1))
            elif kind == "hash":
                parts.extend(x for kv in client.hgetall(key).items() for x in kv)
            elif kind == "set":
                parts.extend(client.smembers(key))
            elif kind == "zset":
                parts.extend(client.zrange(key, 0, -1))
            elif kind == "stream":
                parts.extend(str(entry) for entry in client.xrange(key))
            elif kind == "none":
                continue  # expired since the scan listed it (kombu's short-lived mutexes)
            else:
                raise AssertionError(f"a Redis {kind} this test cannot read: {key!r}")
    finally:
        client.close()
    return "\n".join(
        p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts
    )


def rabbitmq_peek(url: str) -> str:
    """The bodies of the jobs waiting in Courier's queues, put back unacknowledged."""
    bodies: list[str] = []
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in QUEUES:
            while (message := channel.basic_get(name, no_ack=False)) is not None:
                body = message.body
                bodies.append(body.decode("utf-8", "replace") if isinstance(body, bytes) else body)
        channel.close()  # unacknowledged: RabbitMQ queues them again
    return "\n".join(bodies)


def pg_dump(schema: str) -> str:
    executable = shutil.which("pg_dump")
    if executable is None:
        unavailable("pg_dump")
    assert executable is not None
    done = subprocess.run(
        [executable, "--schema", schema, "--dbname", PG_DSN],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plaintext_appears_nowhere_the_service_keeps_data(
    sealed_runtime: Runtime, redis_url: str, pg_schema: str, request: pytest.FixtureRequest
) -> None:
    runtime = sealed_runtime
    marker = f"MARKER-{uuid.uuid4().hex}"
    text = f"HIV viral load undetectable {marker}"
    register_keys(runtime, "alice", "bob")
    listener = connected(runtime.ws("bob"))
    runtime.processes["worker"].stop()  # so that the job waits in the broker to be seen

    message_id = send_encrypted(runtime, "alice", "bob", text)
    if runtime.env["BROKER_URL"].startswith("amqp"):
        broker = wait_for(
            lambda: (
                (peek := rabbitmq_peek(runtime.env["BROKER_URL"])) and message_id in peek and peek
            ),
            30,
            "the encryption job to wait in RabbitMQ",
        )
    else:
        broker = wait_for(
            lambda: (dump := redis_dump(redis_url)) and message_id in dump and dump,
            30,
            "the encryption job to wait in Redis",
        )
    assert marker not in broker

    restart(runtime, "worker")
    runtime.wait_done("alice", message_id)
    frames = wait_for(lambda: listener.of_type("message.new"), 30, "bob's message.new frame")
    assert frames[0]["message"]["id"] == message_id and frames[0]["message"]["content"] is None
    # The content really was the marker: bob can read it.
    assert marker in open_envelope("bob", envelope(runtime, "bob", message_id)).decode()
    listener.close()

    database = pg_dump(pg_schema)
    assert message_id in database and "key_vault" in database  # the dump holds the data
    assert marker not in database
    assert marker not in redis_dump(redis_url)
    logs = "\n".join(p.read_text(errors="replace") for p in runtime.log_dir.glob("*.log"))
    assert message_id in logs  # the logs are there to search
    assert marker not in logs
