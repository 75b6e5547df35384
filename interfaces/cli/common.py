"""What the `courier` commands share: logging, the settings, running a role until signalled."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from infrastructure.settings import SettingsError
from interfaces.heap import settle_heap


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def load_settings() -> Any:
    from infrastructure.runtime.bootstrap import load_settings as read

    try:
        return read()
    except SettingsError as error:
        raise click.ClickException(str(error)) from None


def run_until_signalled(role: str, **options: Any) -> None:
    from infrastructure.runtime.bootstrap import build

    setup_logging()
    settings = load_settings()
    if settings.background_nice:
        # On a host shared with the API, the background roles take the CPU it leaves:
        # a burst of sends is answered first and worked off right after.
        os.nice(settings.background_nice)
    container = build(settings, role, **options)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    container.start()
    settle_heap()
    stop.wait()
    logging.getLogger("courier").info("courier %s stopping", role)
    container.stop()
