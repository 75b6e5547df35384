"""Accounting of access: reads, refusals and auditors' queries become events.

Each audited request stores exactly one event. A read is recorded before its answer
leaves the service, so a read that cannot be recorded is not served either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar
from uuid import UUID

from application.errors import Forbidden, NotFound
from application.messaging import Messaging
from domain.access import Access
from domain.events import Context

T = TypeVar("T")
AUDITOR = "auditor"


class AccessLog:
    """Writes ``Access`` records through the Messaging application's event store."""

    def __init__(self, app: Messaging) -> None:
        self.app = app

    def viewed(
        self, ctx: Context, what: str, conversation_id: UUID | None, message_ids: list[str]
    ) -> None:
        """One event for one page (or search answer) that showed these messages."""
        if message_ids:
            self.app.save(Access.viewed(ctx.as_meta(), what, conversation_id, message_ids))

    def denied(
        self, ctx: Context, action: str, subject_type: str, subject_id: str, status: int
    ) -> None:
        self.app.save(Access.denied(ctx.as_meta(), action, subject_type, subject_id, status))

    def audit_queried(self, ctx: Context, query: str, params: dict[str, str], results: int) -> None:
        meta = replace(ctx, actor_role=AUDITOR).as_meta()
        self.app.save(Access.audit_queried(meta, query, params, results))

    def on_message(self, ctx: Context, action: str, message_id: UUID, run: Callable[[], T]) -> T:
        """Run ``run``; if it refuses the caller a message they may not see, record that."""
        try:
            return run()
        except Forbidden:
            self.denied(ctx, action, "message", str(message_id), 403)
            raise
        except NotFound:
            # Also "no envelope yet" is a 404; only a message hidden from the caller
            # (or one that does not exist) is an attempt on someone else's message.
            if not self._may_see(ctx, message_id):
                self.denied(ctx, action, "message", str(message_id), 404)
            raise

    async def on_message_async(
        self, ctx: Context, action: str, message_id: UUID, run: Callable[[], Awaitable[T]]
    ) -> T:
        """``on_message`` for a read that runs on the event loop and refuses only what
        the caller may not see (every ``NotFound`` of it is such an attempt)."""
        try:
            return await run()
        except NotFound:
            denied = Access.denied(ctx.as_meta(), action, "message", str(message_id), 404)
            await self.app.save_async(denied)
            raise

    @contextmanager
    def on_conversation(self, ctx: Context, action: str, conversation_id: UUID) -> Iterator[None]:
        """Record a refused look into a conversation the caller is not part of."""
        try:
            yield
        except NotFound:
            self.denied(ctx, action, "conversation", str(conversation_id), 404)
            raise

    def _may_see(self, ctx: Context, message_id: UUID) -> bool:
        try:
            self.app.visible_message(ctx, message_id)
        except NotFound:
            return False
        return True
