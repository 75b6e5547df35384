"""The web console: static pages (no build step) served at ``/console`` (docs/CONSOLE.md).

The pages talk to the public HTTP API and the WebSocket with the signed-in user's
token, like any other client. This module only serves the files, under a strict
Content-Security-Policy: scripts, styles, images and connections from this origin
only (plus the WebSocket of the same host), no inline code, no framing.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).with_name("static")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """Only this origin; ``ws:``/``wss:`` of the same host spelled out for older engines."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


class ConsoleFiles:
    """``StaticFiles`` over ``static/``, each answer with the console's CSP."""

    def __init__(self, directory: Path = STATIC) -> None:
        self.files: ASGIApp = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1")

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = content_security_policy(host)
                headers["Cross-Origin-Opener-Policy"] = "same-origin"
                headers["Cache-Control"] = "no-cache"
            await send(message)

        await self.files(scope, receive, with_policy)
