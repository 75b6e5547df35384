"""The caller's notification preferences and contact details (personal data)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.ports import NotificationPreferences as Preferences
from interfaces.http import responses
from interfaces.http.auth import authenticate
from interfaces.http.endpoints import Endpoint, answer, services
from interfaces.http.parsing import read_json
from interfaces.http.schemas import NotificationPreferences

NONE = Preferences()


def preferences_answer(preferences: Preferences) -> responses.NotificationPreferencesAnswer:
    return responses.NotificationPreferencesAnswer.model_validate(
        {
            "channels": preferences.channels,
            "email": preferences.email,
            "phone": preferences.phone,
            "pushToken": preferences.push_token,
            "notifyWhenOnline": preferences.when_online,
        }
    )


async def get_preferences(request: Request) -> Response:
    ctx = authenticate(request).context
    found = await run_in_threadpool(services(request).contacts.get, ctx.tenant_id, ctx.actor_id)
    return answer(preferences_answer(found or NONE))


async def put_preferences(request: Request) -> Response:
    ctx = authenticate(request).context
    body = await read_json(request, NotificationPreferences)
    preferences = Preferences(
        channels=tuple(dict.fromkeys(body.channels)),
        email=body.email,
        phone=body.phone,
        push_token=body.push_token,
        when_online=body.notify_when_online,
    )
    await run_in_threadpool(
        services(request).contacts.put, ctx.tenant_id, ctx.actor_id, preferences
    )
    return answer(preferences_answer(preferences))


async def delete_preferences(request: Request) -> Response:
    ctx = authenticate(request).context
    await run_in_threadpool(services(request).contacts.delete, ctx.tenant_id, ctx.actor_id)
    return Response(status_code=204)


PATH = "/api/users/me/notifications"
ENDPOINTS = (
    Endpoint(
        "GET",
        PATH,
        get_preferences,
        "The caller's notification preferences",
        response=responses.NotificationPreferencesAnswer,
    ),
    Endpoint(
        "PUT",
        PATH,
        put_preferences,
        "Set how and where the caller is notified of messages while away",
        body=NotificationPreferences,
        response=responses.NotificationPreferencesAnswer,
    ),
    Endpoint(
        "DELETE",
        PATH,
        delete_preferences,
        "Erase the caller's notification preferences and contact details",
        status=204,
    ),
)
