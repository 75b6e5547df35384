"""Public keys: register your own, fetch someone else's (for end-to-end sealing)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from interfaces.http import responses
from interfaces.http.auth import authenticate
from interfaces.http.endpoints import Endpoint, respond, services
from interfaces.http.parsing import path_user_id, read_json
from interfaces.http.schemas import RegisterKey
from interfaces.http.wire import public_key_dict, registered_key_dict


async def register(request: Request) -> Response:
    ctx = authenticate(request).context
    body = await read_json(request, RegisterKey)
    app = services(request).messaging
    key = await run_in_threadpool(app.register_key, ctx, body.public_key_pem)
    return respond(registered_key_dict(key))


async def public_key(request: Request) -> Response:
    ctx = authenticate(request).context
    user_id = path_user_id(request)
    app = services(request).messaging
    return respond(public_key_dict(await run_in_threadpool(app.public_key, ctx, user_id)))


async def past_public_key(request: Request) -> Response:
    ctx = authenticate(request).context
    user_id = path_user_id(request)
    key_id = request.path_params["keyId"]
    app = services(request).messaging
    key = await run_in_threadpool(app.public_key, ctx, user_id, key_id)
    return respond(public_key_dict(key))


ENDPOINTS = (
    Endpoint(
        "PUT",
        "/api/keys/me",
        register,
        "Register the caller's RSA public key (≥ 4096 bits)",
        body=RegisterKey,
        response=responses.RegisteredKey,
    ),
    Endpoint(
        "GET",
        "/api/keys/{userId}",
        public_key,
        "A user's current public key",
        response=responses.PublicKeyAnswer,
    ),
    Endpoint(
        "GET",
        "/api/keys/{userId}/{keyId}",
        past_public_key,
        "Any public key a user has registered, current or replaced, by its key id",
        response=responses.PublicKeyAnswer,
    ),
)
