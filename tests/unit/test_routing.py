"""Routes found by table lookup answer as Starlette's own routing would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from interfaces.http.routing import TableRouter


def answer(text: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{text} {dict(request.path_params)}")

    return endpoint


ROUTES = [
    Route("/items/{item}", answer("item"), methods=["GET"]),
    Route("/items/new", answer("new"), methods=["GET", "POST"]),  # shadowed for GET
    Route("/send", answer("send"), methods=["POST"]),
    Route("/health", answer("health"), methods=["GET"]),
]


def clients() -> tuple[TestClient, TestClient]:
    plain = Starlette(routes=ROUTES)
    tabled = Starlette(routes=ROUTES)
    tabled.router = TableRouter(ROUTES, None)
    return TestClient(plain), TestClient(tabled)


def test_the_table_holds_only_routes_that_would_match_first() -> None:
    router = TableRouter(ROUTES, None)
    assert set(router.table) == {
        ("POST", "/items/new"),
        ("POST", "/send"),
        ("GET", "/health"),
        ("HEAD", "/health"),
    }


def test_every_request_gets_the_answer_starlettes_routing_gives() -> None:
    plain, tabled = clients()
    for method, path in [
        ("GET", "/items/new"),  # the parameter route comes first and wins
        ("POST", "/items/new"),
        ("POST", "/send"),
        ("GET", "/send"),  # 405
        ("GET", "/health"),
        ("HEAD", "/health"),
        ("GET", "/items/7"),
        ("GET", "/nowhere"),  # 404
        ("GET", "/health/"),  # redirect to /health
    ]:
        a = plain.request(method, path, follow_redirects=False)
        b = tabled.request(method, path, follow_redirects=False)
        assert (a.status_code, a.text, a.headers.get("allow")) == (
            b.status_code,
            b.text,
            b.headers.get("allow"),
        ), (method, path)
