"""The event log as its followers read it: ordered notifications, decoded or not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from eventsourcing.utils import resolve_topic

Positioned = tuple[int, Any]  # (notification id, domain event)


class EventLog(Protocol):
    """What a follower needs of the event store: ordered, decodable notifications."""

    def read(self, after: int, limit: int) -> list[Positioned]: ...
    def last_position(self) -> int: ...


class ApplicationLog:
    """An eventsourcing application's notification log as an EventLog."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def read(self, after: int, limit: int) -> list[Positioned]:
        decode = self.app.mapper.to_domain_event
        return [(n.id, decode(n)) for n in self.stored(after, limit)]

    def stored(self, after: int, limit: int) -> list[Any]:
        """The notifications after ``after`` as stored: not decoded."""
        return list(
            self.app.recorder.select_notifications(
                start=after, limit=limit, inclusive_of_start=False
            )
        )

    def decode(self, notification: Any) -> Any:
        return self.app.mapper.to_domain_event(notification)

    def last_position(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)


def topic_filter(handles: tuple[type, ...]) -> Callable[[str], bool]:
    """Topic -> whether its event class is one of ``handles``; each topic resolved once,
    so that the check costs a dictionary lookup per event."""
    known: dict[str, bool] = {}

    def wants(topic: str) -> bool:
        try:
            return known[topic]
        except KeyError:
            cls = resolve_topic(topic)
            known[topic] = answer = isinstance(cls, type) and issubclass(cls, handles)
            return answer

    return wants


class SelectiveLog:
    """The log as a follower that needs only some event types sees it: those decoded,
    every other event as ``(position, None)`` (so that its position still moves on),
    without the cost of decoding it."""

    def __init__(self, log_: ApplicationLog, handles: tuple[type, ...]) -> None:
        self.log_ = log_
        self.wants = topic_filter(handles)

    def read(self, after: int, limit: int) -> list[Positioned]:
        decode, wants = self.log_.decode, self.wants
        return [
            (n.id, decode(n) if wants(n.topic) else None) for n in self.log_.stored(after, limit)
        ]

    def last_position(self) -> int:
        return self.log_.last_position()


class RawLog(ApplicationLog):
    """The notification log as stored, not decoded (for the audit chain)."""

    def read(self, after: int, limit: int) -> list[Positioned]:
        return [(n.id, n) for n in self.stored(after, limit)]
