"""The bare-Starlette floor: one endpoint that parses a send and answers 202.

Run by ``benchmarks.floors`` under uvicorn in a process of its own, with the same
uvicorn defaults as ``courier serve`` except the access log (a floor is the framework
alone).
"""

from __future__ import annotations

import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def send(request: Request) -> JSONResponse:
    body = await request.json()
    message = {"id": str(uuid.uuid4()), "content": body.get("content"), "status": "accepted"}
    return JSONResponse({"message": message, "queue": {"jobs": []}}, status_code=202)


async def ready(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/api/messages/direct", send, methods=["POST"]),
        Route("/api/messages/group", send, methods=["POST"]),
        Route("/health/ready", ready),
    ]
)
