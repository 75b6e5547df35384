"""The HTTP API as a service: routes, health, the OpenAPI document, headers, failures and logs."""

from __future__ import annotations

import logging
from uuid import UUID

import psycopg
import pytest
import sqlalchemy.exc
from eventsourcing import persistence
from starlette.testclient import TestClient

from interfaces.http.app import ENDPOINTS, RedactTokens, install_log_redaction
from tests.unit.api.fakes import (
    TENANT,
    FakeContainer,
    auth,
    error_code,
    group,
    send_direct,
)


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
