"""The app of the HTTP API tests: a real Messaging on the memory store, fakes for the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from application.messaging import Messaging
from application.ports import Crypto
from interfaces.http.app import create_app
from interfaces.http.auth import authenticate
from tests.unit.api.fakes import (
    DictVault,
    FakeCipher,
    FakeContainer,
    FakeKeyring,
    FakeQueries,
    check_error_shape,
    make_settings,
)


@pytest.fixture
def container() -> FakeContainer:
    crypto = Crypto(cipher=FakeCipher(), keyring=FakeKeyring(), vault=DictVault())
    messaging = Messaging(crypto=crypto, env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    return FakeContainer(make_settings(), messaging, FakeQueries())


def admin_probe(request: Request) -> Response:
    principal = authenticate(request, {"admin"})
    return JSONResponse({"user": principal.user_id})


@pytest.fixture
def client(container: FakeContainer) -> Iterator[TestClient]:
    app = create_app(container, extra_routes=[Route("/api/probe/admin", admin_probe)])
    with TestClient(app, raise_server_exceptions=False) as c:
        c.event_hooks["response"] = [check_error_shape]
        yield c
