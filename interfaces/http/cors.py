"""CORS for the origins in ``CORS_ORIGINS`` (none by default: no browser page of another
origin may read an answer). Credentials are bearer tokens, never cookies, so answers
never allow credentials.

Starlette's ``CORSMiddleware`` does the work; a preflight it grants is answered 204, and
one it refuses 403 in the API's error format instead of its plain-text 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from interfaces.http.errors import error_response

METHODS = ("GET", "POST", "PUT", "DELETE")
HEADERS = ("authorization", "content-type", "x-request-id")
EXPOSED = ("Retry-After", "X-Request-ID")
MAX_AGE_SECONDS = 600


class Cors(CORSMiddleware):
    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=frozenset(origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            expose_headers=EXPOSED,
            max_age=MAX_AGE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        granted = super().preflight_response(request_headers)
        if granted.status_code < 400:
            headers = {
                name: value
                for name, value in granted.headers.items()
                if name.startswith("access-control-") or name == "vary"
            }
            return Response(status_code=204, headers=headers)
        if not self.is_allowed_origin(request_headers["origin"]):
            return _refuse("this origin may not call the API")
        return _refuse("this method or header is not allowed across origins")


def _refuse(message: str) -> Response:
    response = error_response(403, "cors_refused", message)
    response.headers["Vary"] = "Origin"
    return response
