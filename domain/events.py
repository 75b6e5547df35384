"""What every Courier event carries besides its own facts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Context:
    """Who caused an event, for whom, and as part of which request.

    Stored on every event as the ``meta`` dict so that the audit trail can say
    who did what without knowing each event's own fields.
    """

    actor_id: str
    tenant_id: str
    actor_role: str = "user"
    correlation_id: str = ""
    causation_id: str = ""
    source_ip: str = ""
    user_agent: str = ""
    # A send's priority ("high" or "low"; empty: normal). Its jobs, and the jobs its
    # events lead to, travel in that priority's lane (docs/QUEUES.md).
    priority: str = ""

    def __post_init__(self) -> None:
        if not self.correlation_id:
            object.__setattr__(self, "correlation_id", uuid.uuid4().hex)

    def as_meta(self) -> dict[str, str]:
        # Every field is a str: no need for asdict's deep copies, on every command.
        return {key: value for key in _FIELDS if (value := getattr(self, key))}


_FIELDS = tuple(f.name for f in fields(Context))
SYSTEM_ACTOR = "system"


def system_context(
    tenant_id: str, correlation_id: str = "", causation_id: str = "", priority: str = ""
) -> Context:
    """The context of work the service does on its own (workers, schedules)."""
    return Context(
        actor_id=SYSTEM_ACTOR,
        tenant_id=tenant_id,
        actor_role="system",
        correlation_id=correlation_id,
        causation_id=causation_id,
        priority=priority,
    )
