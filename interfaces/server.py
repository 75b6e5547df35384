"""Running the API process: lifespan (build, start, stop) and uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import Lifespan

from application.loading import Loader
from application.messaging import Messaging
from infrastructure.eventreader import event_reader
from infrastructure.groupcommit import GroupCommitter
from infrastructure.runtime.bootstrap import SERVE, build
from infrastructure.runtime.container import Container
from infrastructure.settings import Settings
from infrastructure.vault import SqlKeyVault
from interfaces.heap import settle_heap
from interfaces.http.hub import Hub

log = logging.getLogger("courier")

PRESENCE_REFRESH_SECONDS = 20.0


def make_lifespan(container: Container) -> Lifespan[Starlette]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub = Hub(container)
        app.state.hub = hub
        container.start()
        hub.start(asyncio.get_running_loop())
        refresher = asyncio.ensure_future(_refresh_presence(container))
        settle_heap()
        try:
            yield
        finally:
            refresher.cancel()
            hub.stop()
            if container.limiter is not None:
                await container.limiter.close()
            await asyncio.to_thread(container.stop)

    return lifespan


async def _refresh_presence(container: Container) -> None:
    while True:
        await asyncio.sleep(PRESENCE_REFRESH_SECONDS)
        try:
            await asyncio.to_thread(container.presence.refresh)
        except Exception:
            log.warning("could not refresh presence in Redis")


def batched_reads(app: Messaging) -> GroupCommitter:
    """Reads of aggregates by id, batched like the saves: what concurrent requests ask
    for in one query, on one thread, each answer awaited on the event loop."""
    loader = Loader(app, event_reader(app.recorder))

    def get_many(ids: Sequence[Any]) -> list[Any]:
        found = loader.get_many(ids)
        return [found.get(i) for i in ids]

    return GroupCommitter(get_many)


def create_server_app(settings: Settings) -> Starlette:
    from interfaces.http.app import create_app
    from interfaces.http.metrics import metrics_route

    container = build(settings, SERVE)
    if container.committer is not None and isinstance(container.crypto.vault, SqlKeyVault):
        # Sends await their commits on the event loop instead of holding a thread each.
        # On PostgreSQL the key-vault rows of a send go in its events' transaction
        # (infrastructure/eventstore.py); on SQLite they are a database apart.
        keys_apart = None if settings.is_postgres else container.crypto.vault.put_async
        container.messaging.record_async_with(container.committer.submit_async, keys_apart)
        container.messaging.read_async_with(batched_reads(container.messaging).submit_async)
    return create_app(
        container,
        lifespan=make_lifespan(container),
        extra_routes=[metrics_route()],
        limiter=container.limiter,
    )


def run(settings: Settings, host: str, port: int, *, access_log: bool = False) -> None:
    """Serve on uvloop and httptools; ``access_log`` adds one log line per request."""
    from interfaces.http.app import install_log_redaction
    from interfaces.http.protocol import WebSocketProtocol, guarded_protocol

    app = create_server_app(settings)
    limits = settings.limits
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        log_level="info",
        access_log=access_log,
        http=guarded_protocol(limits.header_timeout, limits.body_timeout, limits.max_header_bytes),
        ws=WebSocketProtocol,
        # No permessage-deflate: a frame compressed per socket cannot be shared by the
        # sockets of a group, it doubles each socket's memory, and compressing a sender's
        # text in one context with other content is a known side channel (CRIME/BREACH).
        ws_per_message_deflate=False,
        ws_max_size=limits.ws_max_frame_bytes,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        timeout_keep_alive=5,
        server_header=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    install_log_redaction()
    server.run()
