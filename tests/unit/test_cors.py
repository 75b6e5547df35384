"""CORS: only the configured origins are granted; refusals in the API's error format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from interfaces.http.cors import Cors

APP = "https://app.example.org"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def refuse(request: Request) -> Response:
    return JSONResponse({"error": {"code": "unauthorized"}}, status_code=401)


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = Starlette(
        routes=[Route("/api/x", refuse, methods=["GET", "POST"])],
        middleware=[Middleware(Cors, origins=[APP])],
    )
    with TestClient(app) as c:
        yield c


def test_a_preflight_from_a_configured_origin_is_granted_without_credentials(
    client: TestClient,
) -> None:
    granted = client.options("/api/x", headers=PREFLIGHT)
    assert granted.status_code == 204
    assert granted.content == b""
    assert granted.headers["access-control-allow-origin"] == APP
    assert granted.headers["access-control-allow-methods"] == "GET, POST, PUT, DELETE"
    allowed = granted.headers["access-control-allow-headers"]
    assert {"authorization", "content-type", "x-request-id"} <= set(allowed.lower().split(", "))
    assert granted.headers["access-control-max-age"] == "600"
    assert "Origin" in granted.headers["vary"]
    assert "access-control-allow-credentials" not in granted.headers


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"Origin": "https://evil.example.com"}, "this origin may not call the API"),
        ({"Origin": APP + ".evil.example.com"}, "this origin may not call the API"),
        ({"Origin": "null"}, "this origin may not call the API"),
        ({"Access-Control-Request-Method": "PATCH"}, "not allowed across origins"),
        ({"Access-Control-Request-Headers": "x-forwarded-for"}, "not allowed across origins"),
    ],
)
def test_other_preflights_are_refused_in_the_error_format(
    client: TestClient, changes: dict[str, str], message: str
) -> None:
    refused = client.options("/api/x", headers={**PREFLIGHT, **changes})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cors_refused"
    assert message in refused.json()["error"]["message"]
    assert refused.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in refused.headers


def test_answers_grant_only_the_configured_origins(client: TestClient) -> None:
    mine = client.get("/api/x", headers={"Origin": APP})
    assert mine.status_code == 401
    assert mine.headers["access-control-allow-origin"] == APP
    assert mine.headers["access-control-expose-headers"] == "Retry-After, X-Request-ID"
    assert "Origin" in mine.headers["vary"]
    theirs = client.get("/api/x", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in theirs.headers
    assert "Origin" in theirs.headers["vary"]
