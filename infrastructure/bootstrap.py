"""The one place that builds everything, for either runtime. (STUB — being written.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from application.messaging import Messaging
from application.ports import MessageQueries
from infrastructure.settings import Settings


@dataclass
class Container:
    settings: Settings
    messaging: Messaging
    queries: MessageQueries
    hub: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def readiness(self) -> dict[str, bool]:
        """Each dependency and whether it answers right now."""
        raise NotImplementedError

    def start(self) -> None: ...
    def stop(self) -> None: ...


def build(settings: Settings, *, role: str = "serve") -> Container:
    raise NotImplementedError
