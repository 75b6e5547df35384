"""Scheduled sends: the sender calls one off before it is due."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from application.errors import Conflict, Forbidden
from application.policies import first_jobs
from application.reads import Reads
from domain.events import Context
from domain.message import Message


class Scheduling(Reads):
    """Scheduled sends called off by their sender."""

    def cancel(self, ctx: Context, message_id: UUID, now: datetime) -> Message:
        """The sender calls off a scheduled send that is not due yet (``now``).

        Someone who cannot see the message finds nothing; a participant who did not
        send it is refused; a send that is not scheduled, already cancelled, due or
        begun conflicts.
        """

        def attempt() -> Message:
            message = self.visible_message(ctx, message_id)
            if message.sender_id != ctx.actor_id:
                raise Forbidden("only the sender can cancel a scheduled message")
            if message.cancelled:
                raise Conflict("this scheduled message is already cancelled")
            if not message.is_scheduled or datetime.fromisoformat(message.send_at or "") <= now:
                raise Conflict("this message is not scheduled any more: it is being sent")
            held = [job.job_id for job in first_jobs(message)]
            message.cancel(held, ctx.as_meta())
            self.save(message)
            return message

        return self.retrying(attempt)
