"""Master-key rotation and shredding, through the HTTP API and the `courier` command,
against real server processes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from infrastructure.crypto import generate_master_key_spec
from infrastructure.runtime.stores import make_engine
from infrastructure.settings import load
from infrastructure.tables import key_vault
from tests.e2e.harness import Runtime, auth
from tests.e2e.sealing import courier, envelope, register_keys, restart, send_encrypted
from tests.recipient import open_envelope

pytestmark = pytest.mark.e2e


def vault_rows(runtime: Runtime, message_id: str) -> dict[str, str]:
    """The message's rows in the key vault: holder → key id."""
    engine = make_engine(load(runtime.env))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(key_vault.c.holder, key_vault.c.key_id).where(
                    key_vault.c.message_id == message_id
                )
            ).all()
    finally:
        engine.dispose()
    return {row.holder: row.key_id for row in rows}


def service_key_id(runtime: Runtime, message_id: str) -> str:
    (key_id,) = [k for h, k in vault_rows(runtime, message_id).items() if h.startswith("service:")]
    return key_id


def test_rotation_rewraps_data_keys_and_old_messages_stay_readable(services: Runtime) -> None:
    old_key = services.env["ENCRYPTION_MASTER_KEYS"]
    old_id = old_key.split(":")[0]
    register_keys(services, "alice", "bob")
    delivered = send_encrypted(services, "alice", "bob", "before rotation")
    services.wait_done("alice", delivered)
    before = envelope(services, "bob", delivered)

    services.processes["worker"].stop()
    waiting = send_encrypted(services, "alice", "bob", "sealed before, wrapped for bob after")
    assert services.message("alice", waiting)["status"] == "encrypting"
    assert service_key_id(services, delivered) == service_key_id(services, waiting) == old_id

    new_key = generate_master_key_spec("k-rotated")
    services.env["ENCRYPTION_MASTER_KEYS"] = f"{new_key},{old_key}"
    rotated = courier(services, "keys", "rotate", "--batch-size", "1")
    assert rotated.returncode == 0, rotated.stderr
    assert "re-wrapped 2 data key(s) under k-rotated" in rotated.stdout
    assert "re-wrapped 1 search index key(s)" in rotated.stdout
    assert "older ones may be retired" in rotated.stdout
    assert service_key_id(services, delivered) == service_key_id(services, waiting) == "k-rotated"
    again = courier(services, "keys", "rotate")
    assert again.returncode == 0 and "re-wrapped 0 data key(s)" in again.stdout

    # Retire the old key everywhere: only the new one is left to unwrap with.
    restart(services, "serve", "relay", "worker", "projections", ENCRYPTION_MASTER_KEYS=new_key)
    services.wait_done("alice", waiting)
    assert open_envelope("bob", envelope(services, "bob", waiting)) == (
        b"sealed before, wrapped for bob after"
    )
    after = envelope(services, "bob", delivered)
    assert open_envelope("bob", after) == b"before rotation"
    assert after == before  # no content was re-encrypted, bob's wrapped key is as it was

    fresh = send_encrypted(services, "alice", "bob", "after rotation")
    done = services.wait_done("alice", fresh)
    assert done["encryptionMetadata"]["keyId"] == "k-rotated"
    assert open_envelope("bob", envelope(services, "bob", fresh)) == b"after rotation"


def test_shredding_makes_content_unreadable_and_keeps_the_events(runtime: Runtime) -> None:
    register_keys(runtime, "alice", "bob")
    message_id = send_encrypted(runtime, "alice", "bob", "to be forgotten")
    runtime.wait_done("alice", message_id)
    assert open_envelope("bob", envelope(runtime, "bob", message_id)) == b"to be forgotten"
    assert set(vault_rows(runtime, message_id)) >= {"alice", "bob"}

    shred = f"/api/messages/{message_id}/shred"
    refused = runtime.http.post(shred, json={"reason": "erasure"}, headers=auth("bob"))
    assert refused.status_code == 403
    elsewhere = runtime.http.post(
        shred, json={"reason": "erasure"}, headers=auth("dpo", "clinic-b", ["admin"])
    )
    assert elsewhere.status_code == 404
    done = runtime.http.post(
        shred, json={"reason": "erasure"}, headers=auth("dpo", roles=["admin"])
    )
    assert done.status_code == 200, done.text
    assert done.json() == {
        "messageId": message_id,
        "shredded": True,
        "reason": "erasure",
        "keysDestroyed": 3,
    }

    gone = runtime.http.get(f"/api/messages/{message_id}/envelope", headers=auth("bob"))
    assert gone.status_code == 410
    assert gone.json()["error"]["code"] == "content_shredded"
    assert "destroyed" in gone.json()["error"]["message"]
    assert vault_rows(runtime, message_id) == {}
    # The message and its history stay: only its content is lost.
    kept = runtime.message("bob", message_id)
    assert kept["content"] is None and kept["status"] == "delivered"
    assert kept["encryptionMetadata"]["algorithm"] == "AES-256-GCM"

    # Retention, by an operator on the command line.
    expired = send_encrypted(runtime, "alice", "bob", "past its retention period")
    runtime.wait_done("alice", expired)
    result = courier(runtime, "shred", expired, "--tenant", "t1", "--reason", "retention")
    assert result.returncode == 0, result.stderr
    assert f"{expired}: shredded (retention), 3 wrapped key(s) destroyed" in result.stdout
    after = runtime.http.get(f"/api/messages/{expired}/envelope", headers=auth("alice"))
    assert after.status_code == 410
    unknown = courier(runtime, "shred", message_id, "--tenant", "clinic-b")
    assert unknown.returncode == 1 and "not found" in unknown.stderr


def test_a_legal_hold_stops_a_shred_by_api_and_by_command_until_released(
    runtime: Runtime,
) -> None:
    register_keys(runtime, "alice", "bob")
    message_id = send_encrypted(runtime, "alice", "bob", "under investigation")
    runtime.wait_done("alice", message_id)
    conversation = runtime.message("alice", message_id)["conversationId"]
    auditor, admin = auth("aud", roles=["auditor"]), auth("dpo", roles=["admin"])
    hold = f"/api/audit/conversations/{conversation}/hold"
    placed = runtime.http.put(hold, json={"reason": "case 7"}, headers=auditor)
    assert placed.status_code == 200, placed.text
    shred = f"/api/messages/{message_id}/shred"

    refused = runtime.http.post(shred, json={"reason": "erasure"}, headers=admin)

    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "legal_hold" and "legal hold" in error["message"]
    assert "case 7" not in refused.text  # the auditor's reason is not the admin's to read
    by_command = courier(runtime, "shred", message_id, "--tenant", "t1", "--reason", "erasure")
    assert by_command.returncode == 1 and "legal hold" in by_command.stderr
    assert vault_rows(runtime, message_id)  # every key is still there
    readable = runtime.http.get(f"/api/messages/{message_id}/envelope", headers=auth("bob"))
    assert readable.status_code == 200

    released = runtime.http.request("DELETE", hold, json={"reason": "closed"}, headers=auditor)
    assert released.status_code == 200, released.text
    done = runtime.http.post(shred, json={"reason": "erasure"}, headers=admin)
    assert done.status_code == 200, done.text
    assert vault_rows(runtime, message_id) == {}
