"""Reading a message: who may see it, the ``Access`` record of a view, marking it read."""

from __future__ import annotations

from uuid import UUID

from application.errors import Forbidden, NotFound
from application.store import Store
from domain.access import MESSAGE, Access
from domain.events import Context
from domain.message import Message


class Reads(Store):
    """Messages as their sender and recipients may see them."""

    def get_message(self, tenant_id: str, message_id: UUID) -> Message:
        return self._get(Message, message_id, tenant_id)

    def visible_message(self, ctx: Context, message_id: UUID) -> Message:
        message = self._get(Message, message_id, ctx.tenant_id)
        if not message.shown_to(ctx.actor_id):
            raise NotFound("message not found")
        return message

    def view_message(self, ctx: Context, message_id: UUID, what: str = MESSAGE) -> Message:
        """Fetch a message for its sender or a recipient, and record that they saw it.

        The view is an ``Access`` record of its own, not an event of the message: reads
        never contend with the message's processing, and concurrent views share a
        transaction of the group commit.
        """
        message = self.visible_message(ctx, message_id)
        self.save(Access.viewed(ctx.as_meta(), what, None, [str(message.id)]))
        return message

    @property
    def reads_async(self) -> bool:
        """Whether ``view_message_async`` and ``save_async`` may be used (the batched
        reader and the async store are set)."""
        return self._get_async is not None and self._put_async is not None

    async def view_message_async(
        self, ctx: Context, message_id: UUID, what: str = MESSAGE
    ) -> Message:
        """``view_message`` on the caller's event loop: the message comes from the
        batched reader, the ``Access`` record goes through the group commit."""
        assert self._get_async is not None
        [message] = await self._get_async([message_id])
        if (
            not isinstance(message, Message)
            or message.tenant_id != ctx.tenant_id
            or not message.shown_to(ctx.actor_id)
        ):
            raise NotFound("message not found")
        await self.save_async(Access.viewed(ctx.as_meta(), what, None, [str(message.id)]))
        return message

    def mark_read(self, ctx: Context, message_id: UUID) -> Message:
        def attempt() -> Message:
            message = self.visible_message(ctx, message_id)
            if ctx.actor_id not in message.recipient_ids:
                raise Forbidden("only a recipient can mark a message read")
            if message.mark_read(ctx.actor_id, meta=ctx.as_meta()):
                self.save(message)
            return message

        return self.retrying(attempt)
