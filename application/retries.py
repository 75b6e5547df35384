"""Operating the queues: an operator asks to run a failed job again."""

from __future__ import annotations

from application.errors import NotFound
from application.jobs import BadJobId, Job
from application.reads import Reads
from domain.events import Context


class Retries(Reads):
    """Operators' requests to run a failed job again."""

    def request_retry(self, ctx: Context, job_id: str) -> Job:
        """An operator asks to run a failed job again; recorded with who asked.

        Only a job that is failed now, on a message of the caller's tenant, can be
        retried: anything else is not found. The relay publishes it (attempt 1).
        """
        try:
            job = Job.parse_id(job_id, ctx.tenant_id)
        except BadJobId:
            raise NotFound("failed job not found") from None

        def attempt() -> Job:
            try:
                message = self.get_message(ctx.tenant_id, job.message_id)
            except NotFound:
                raise NotFound("failed job not found") from None
            if not any(f["job_id"] == job_id for f in message.failures):
                raise NotFound("failed job not found")
            meta = ctx.as_meta()
            if message.priority:  # the retried job keeps its message's lane
                meta["priority"] = message.priority
            message.request_retry(job.queue, job_id, meta=meta)
            self.save(message)
            return job

        return self.retrying(attempt)
