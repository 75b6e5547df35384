"""The WebSocket read side (SPEC §5). (STUB — being written.)"""

from __future__ import annotations

from starlette.websockets import WebSocket


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.close(code=4401)
