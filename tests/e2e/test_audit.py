"""The audit trail over real HTTP: who did what, when, from where, with what outcome."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from infrastructure.checkpoints import generate_signing_key
from tests.conftest import PG_DSN
from tests.e2e.browser import send_over_http
from tests.e2e.conftest import services_env
from tests.e2e.harness import Runtime, auth, wait_for

pytestmark = pytest.mark.e2e

SECRET = "blood results: potassium 6.1"
AUDITOR = ["auditor"]


def audit_get(runtime: Runtime, path: str, tenant: str = "t1", **params: Any) -> dict[str, Any]:
    response = runtime.http.get(path, params=params, headers=auth("inspector", tenant, AUDITOR))
    assert response.status_code == 200, response.text
    assert SECRET not in response.text  # no content ever appears in an audit answer
    body: dict[str, Any] = response.json()
    return body


def trail_of(runtime: Runtime, message_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = audit_get(runtime, f"/api/audit/messages/{message_id}/trail")[
        "items"
    ]
    return items


def test_a_message_trail_lists_its_lifecycle_views_and_a_denied_attempt(runtime: Runtime) -> None:
    ua = {"User-Agent": "ward-tablet/7"}
    sent = runtime.http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": SECRET},
        headers={**auth("alice"), **ua},
    )
    assert sent.status_code == 202, sent.text
    message_id = sent.json()["message"]["id"]
    runtime.wait_done("alice", message_id)  # (alice's own views are in the trail too)
    conversation_id = sent.json()["message"]["conversationId"]

    assert runtime.http.get(f"/api/messages/{message_id}", headers=auth("bob")).status_code == 200
    read = runtime.http.post(f"/api/messages/{message_id}/read", headers=auth("bob"))
    assert read.status_code == 200
    page = runtime.http.get(f"/api/conversations/{conversation_id}/messages", headers=auth("bob"))
    assert page.status_code == 200 and [m["id"] for m in page.json()["items"]] == [message_id]
    outsider = runtime.http.get(f"/api/messages/{message_id}", headers=auth("mallory"))
    assert outsider.status_code == 404
    other_tenant = runtime.http.get(f"/api/messages/{message_id}", headers=auth("bob", "t2"))
    assert other_tenant.status_code == 404

    def complete() -> list[dict[str, Any]] | None:
        items = trail_of(runtime, message_id)
        return items if any(i["type"] == "Denied" for i in items) else None

    items = wait_for(complete, 20, "the denied attempt in the trail")
    steps = [(i["aggregateType"], i["type"], i["actorId"]) for i in items]
    assert steps[0] == ("Message", "Created", "alice")
    stages = [s[1] for s in steps if s[2] == "system"]
    assert sorted(stages) == ["Delivered", "Indexed", "Notified"]  # indexing runs beside delivery
    assert stages.index("Delivered") < stages.index("Notified")
    assert steps.index(("Message", "Notified", "system")) < steps.index(("Message", "Read", "bob"))
    bob = [s for s in steps if s[2] == "bob"]
    assert bob == [  # the view of the message, its read, the page that showed it
        ("Access", "Viewed", "bob"),
        ("Message", "Read", "bob"),
        ("Access", "Viewed", "bob"),
    ]
    assert steps[-1] == ("Access", "Denied", "mallory")
    assert [i["position"] for i in items] == sorted(i["position"] for i in items)

    created, denied = items[0], items[-1]
    assert created["tenantId"] == "t1" and created["actorRole"] == "user"
    assert created["data"]["recipientIds"] == ["bob"]
    assert not {"content", "sealed", "contentDigest", "searchTokens"} & set(created["data"])
    assert created["data"]["context"]["userAgent"] == "ward-tablet/7"
    assert created["data"]["context"]["sourceIp"] == "127.0.0.1"
    assert denied["data"]["status"] == 404 and denied["data"]["subjectId"] == message_id
    views = [i for i in items if i["aggregateType"] == "Access" and i["type"] == "Viewed"]
    bobs = [v["data"] for v in views if v["actorId"] == "bob"]
    assert [(v["what"], v["messageIds"]) for v in bobs] == [
        ("message", [message_id]),
        ("conversation.page", [message_id]),
    ]
    assert set(created) == {
        "position",
        "aggregateId",
        "aggregateType",
        "version",
        "type",
        "actorId",
        "actorRole",
        "tenantId",
        "occurredAt",
        "data",
    }

    access = audit_get(runtime, "/api/audit/users/alice/access")["items"]
    who = [(i["type"], i["actorId"]) for i in access]
    assert who == [("Viewed", "bob"), ("Read", "bob"), ("Viewed", "bob"), ("Denied", "mallory")]
    assert all(i["messageIds"] == [message_id] for i in access)

    # The other tenant's auditor sees only what their own user tried; none of t1's trail.
    def their_trail() -> list[dict[str, Any]] | None:
        # 404 until the audit view has taken in t2's own denied attempt.
        path = f"/api/audit/messages/{message_id}/trail"
        answer = runtime.http.get(path, headers=auth("inspector", "t2", AUDITOR))
        if answer.status_code == 404:
            return None
        found: list[dict[str, Any]] = audit_get(runtime, path, tenant="t2")["items"]
        return found or None

    theirs = wait_for(their_trail, 20, "the other tenant's denied attempt in its trail")
    assert [(i["type"], i["actorId"], i["tenantId"]) for i in theirs] == [("Denied", "bob", "t2")]
    unknown = runtime.http.get(
        "/api/audit/messages/00000000-0000-0000-0000-00000000abcd/trail",
        headers=auth("inspector", "t1", AUDITOR),
    )
    assert unknown.status_code == 404

    # The auditors' own queries are events too.

    def queried() -> list[dict[str, Any]] | None:
        found = audit_get(runtime, "/api/audit/events", actorId="inspector", type="AuditQueried")
        items: list[dict[str, Any]] = found["items"]
        return items if any(i["data"]["query"] == "user.access" for i in items) else None

    mine = wait_for(queried, 20, "the auditor's own queries in the log")
    trail_query = next(i for i in mine if i["data"]["query"] == "message.trail")
    assert trail_query["actorRole"] == "auditor"
    assert trail_query["data"]["params"] == {"messageId": message_id}


def test_only_auditors_reach_the_audit_endpoints_which_filter_and_page(embedded: Runtime) -> None:
    runtime = embedded
    paths = [
        "/api/audit/events",
        "/api/audit/verify",
        "/api/audit/users/alice/access",
        "/api/audit/messages/00000000-0000-0000-0000-000000000001/trail",
    ]
    for path in paths:
        for roles in (["admin"], ["user"], ["user", "admin"]):
            response = runtime.http.get(path, headers=auth("someone", "t1", roles))
            assert response.status_code == 403, (path, roles, response.text)
            assert response.json()["error"]["code"] == "forbidden"
    verdict = audit_get(runtime, "/api/audit/verify")
    assert verdict["ok"] is True and verdict["firstBadPosition"] is None

    for n in range(3):
        sent = runtime.http.post(
            "/api/messages/direct",
            json={"recipientId": f"r{n}", "content": SECRET},
            headers=auth("carol"),
        )
        assert sent.status_code == 202

    def created() -> list[dict[str, Any]] | None:
        found = audit_get(runtime, "/api/audit/events", actorId="carol", type="Created")
        items: list[dict[str, Any]] = found["items"]
        return items if len([i for i in items if i["aggregateType"] == "Message"]) == 3 else None

    everything = wait_for(created, 20, "carol's three messages in the audit index")
    first = audit_get(runtime, "/api/audit/events", actorId="carol", type="Created", limit=2)
    assert len(first["items"]) == 2 and first["nextCursor"]
    rest = audit_get(
        runtime,
        "/api/audit/events",
        actorId="carol",
        type="Created",
        limit=2,
        cursor=first["nextCursor"],
    )
    assert [i["position"] for i in first["items"] + rest["items"]] == [
        i["position"] for i in everything
    ]
    one = everything[0]
    by_aggregate = audit_get(runtime, "/api/audit/events", aggregateId=one["aggregateId"])
    assert {i["aggregateId"] for i in by_aggregate["items"]} == {one["aggregateId"]}
    later = audit_get(runtime, "/api/audit/events", actorId="carol", **{"from": "2999-01-01"})
    assert later["items"] == []
    bad = runtime.http.get(
        "/api/audit/events", params={"from": "yesterday"}, headers=auth("i", "t1", AUDITOR)
    )
    assert bad.status_code == 422


@pytest.fixture
def signed(tmp_path: Path, pg_schema: str, redis_url: str) -> Iterator[Runtime]:
    """Services where only the projections process holds the signing key (signing every
    0.3 s) and the API trusts its public key, as docs/AUDIT.md advises."""
    private = generate_signing_key()
    public = base64.b64encode(
        Ed25519PrivateKey.from_private_bytes(base64.b64decode(private))
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    env = {
        **services_env(pg_schema, redis_url),
        "AUDIT_PUBLIC_KEY": public,
        "AUDIT_CHECKPOINT_SECONDS": "0.3",
        "AUDIT_VERIFY_FULL_SECONDS": "0",
    }
    runtime = Runtime("services", env, tmp_path)
    runtime.start()
    try:
        runtime.start_role("projections", env={"AUDIT_SIGNING_KEY": private})
        yield runtime
    finally:
        runtime.stop()


def test_verify_covers_what_auditors_read_and_catches_a_cut_tail(
    signed: Runtime, pg_schema: str
) -> None:
    ids = [send_over_http(signed, "alice", f"r{n}", f"note {n}") for n in range(4)]
    for mid in ids:
        signed.wait_done("alice", mid)

    def checkpointed() -> dict[str, Any] | None:
        verdict = audit_get(signed, "/api/audit/verify")
        assert verdict["ok"] is True, verdict
        point = verdict["checkpoint"]
        return verdict if point and point["position"] >= verdict["auditedThrough"] > 0 else None

    verdict = wait_for(checkpointed, 60, "a scheduled checkpoint, checked by the API")
    assert verdict["lag"] >= 0 and verdict["logHead"] >= verdict["chainedThrough"]
    table = f"{pg_schema}.audit_events"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT position, actor_id FROM {table} WHERE aggregate_id = %s AND type = 'Created'",
            [ids[1]],
        ).fetchone()
        assert row is not None
        position, actor = row
        conn.execute(f"UPDATE {table} SET actor_id = 'bob' WHERE position = %s", [position])
        edited = audit_get(signed, "/api/audit/verify")
        assert edited["ok"] is False and edited["firstBadPosition"] == position, edited
        conn.execute(f"UPDATE {table} SET actor_id = %s WHERE position = %s", [actor, position])
        assert audit_get(signed, "/api/audit/verify")["ok"] is True

        # Once the projections took in the last event (the query just recorded)...
        def caught_up() -> bool:
            last = conn.execute(
                f"SELECT max(notification_id) FROM {pg_schema}.messaging_events"
            ).fetchone()
            reached = conn.execute(
                f"SELECT min(position) FROM {pg_schema}.followers "
                "WHERE name IN ('audit', 'audit_chain')"
            ).fetchone()
            return bool(last and reached and reached[0] >= last[0])

        wait_for(caught_up, 30, "the projections to take in the last event")
        # ... the last events go, with every trace of them: links, entries, positions.
        kept = verdict["checkpoint"]["position"] - 3
        for name, column in (
            ("messaging_events", "notification_id"),
            ("audit_chain", "position"),
            ("audit_events", "position"),
            ("audit_subjects", "position"),
            ("audit_access", "position"),
        ):
            conn.execute(f"DELETE FROM {pg_schema}.{name} WHERE {column} > %s", [kept])
        conn.execute(
            f"UPDATE {pg_schema}.followers SET position = %s WHERE position > %s", [kept, kept]
        )
        cut = audit_get(signed, "/api/audit/verify")
        assert cut["ok"] is False and cut["firstBadPosition"] > kept, cut
        assert "signed checkpoint" in cut["reason"], cut
