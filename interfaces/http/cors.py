"""CORS for the origins in ``CORS_ORIGINS`` (none by default: no browser page of another
origin may read an answer). Credentials are bearer tokens, never cookies, so answers
never allow credentials. Refusals use the API's error format."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interfaces.http.errors import error_response

METHODS = ("GET", "POST", "PUT", "DELETE")
HEADERS = ("authorization", "content-type", "x-request-id")
EXPOSED = "Retry-After, X-Request-ID"
MAX_AGE_SECONDS = 600


class Cors:
    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = origin in self.origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(headers, origin, allowed)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.add_vary_header("Origin")
                if allowed:
                    answer["Access-Control-Allow-Origin"] = origin
                    answer["Access-Control-Expose-Headers"] = EXPOSED
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _preflight(self, headers: Headers, origin: str, allowed: bool) -> Response:
        method = headers["access-control-request-method"].upper()
        wanted = {
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        }
        if not allowed:
            return self._refuse("this origin may not call the API")
        if method not in METHODS or not wanted <= set(HEADERS):
            return self._refuse("this method or header is not allowed across origins")
        response = Response(status_code=204)
        response.headers.update(
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ", ".join(METHODS),
                "Access-Control-Allow-Headers": ", ".join(HEADERS),
                "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
                "Vary": "Origin",
            }
        )
        return response

    @staticmethod
    def _refuse(message: str) -> Response:
        response = error_response(403, "cors_refused", message)
        response.headers["Vary"] = "Origin"
        return response
