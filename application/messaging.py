"""The Messaging application: every command and the queries on the event store.

Each use case lives in a module of its own, as a part of this one application (one
event store, one unit of work): ``store`` (saving and loading), ``conversations``,
``keys`` (the key registry), ``reads``, ``sealing`` (and the envelope), ``idempotency``,
``sending`` and ``loopsending`` (on the event loop), ``scheduling``, ``retries`` and
``shredding``.
"""

from __future__ import annotations

from application.loopsending import LoopSending
from application.retries import Retries
from application.scheduling import Scheduling
from application.shredding import Shredding


class Messaging(LoopSending, Scheduling, Retries, Shredding):
    """Commands and event-store queries of Courier (docs/API.md §4)."""

    name = "Messaging"
    env = {"COMPRESSOR_TOPIC": ""}
