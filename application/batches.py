"""A batch of jobs as one unit of work: one read, one write, an outcome per job.

The jobs of a batch (of one queue or several) load every message they need in one query
(or find it as this process last saved it), fetch what their policies need at once
(who is online, the service's data keys, the participants' public keys), run one after
another on the messages in memory, and store every event they recorded in one
event-store transaction. Each job keeps an outcome of its own: one that fails leaves the
others' events in place and is retried alone.

A save that conflicts (a writer elsewhere changed one of the messages meanwhile) is
taken apart: each message it held is loaded afresh and its jobs are run again one by
one (``Processor.run``), so only a real conflict costs more than the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.errors import NotFound
from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_CLEANUP,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
)
from application.loading import Kept, Loader
from application.ports import SERVICE_KEY, Delivered, Outcomes, VaultEntry
from application.processing import JobNotReady, Processor, UnknownJob, service_holder
from domain.keys import NoKeyRegistered, UserKeys, user_keys_id
from domain.message import ENVELOPE_VERSION, Message


@dataclass
class JobResult:
    """How one job of a batch ended: its follow-up jobs, or the error it failed with."""

    follow_ups: list[Job] = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class _Prepared:
    """What the batch's policies need from outside the messages, fetched at once."""

    online: dict[str, set[str]] = field(default_factory=dict)  # tenant → online users
    services: dict[tuple[UUID, str], VaultEntry] = field(default_factory=dict)
    keys: dict[UUID, UserKeys] = field(default_factory=dict)
    vault: list[VaultEntry] = field(default_factory=list)  # to store before the events
    notified: dict[str, Outcomes | Exception | None] = field(default_factory=dict)  # by job id


class BatchProcessor:
    """Runs batches of jobs against the application through ``processor``'s policies."""

    def __init__(self, processor: Processor, loader: Loader, kept: Kept | None = None) -> None:
        self.processor = processor
        self.app = processor.app
        self.loader = loader
        self.kept = kept if kept is not None else Kept()

    def run(self, jobs: list[Job], check: Callable[[Job], None] | None = None) -> list[JobResult]:
        """One result per job, in order. ``check(job)`` may fail a job before it runs."""
        results = [JobResult() for _ in jobs]
        todo: list[int] = []
        for i, job in enumerate(jobs):
            try:
                if check is not None:
                    check(job)
                if job.queue == MESSAGE_CLEANUP:
                    results[i].follow_ups = self.processor.run(job).follow_ups
                else:
                    todo.append(i)
            except Exception as error:
                results[i].error = error
        if not todo:
            return results
        messages = self._messages({jobs[i].message_id for i in todo})
        prepared = self._prepare([jobs[i] for i in todo], messages)
        ran: dict[UUID, list[int]] = {}
        for i in todo:
            job = jobs[i]
            message = messages.get(job.message_id)
            if message is None or message.tenant_id != job.tenant_id:
                results[i].error = NotFound("message not found")
                continue
            ran.setdefault(message.id, []).append(i)
            try:
                results[i].follow_ups = self._apply(job, message, prepared)
            except Exception as error:
                results[i].error = error
        self._save(jobs, results, messages, ran, prepared)
        for i in todo:
            if isinstance(results[i].error, JobNotReady):
                # The copy may be behind what another process stored: read it next time.
                self.kept.forget(jobs[i].message_id)
        return results

    def record_failure(self, job: Job, attempts: int, error: str) -> None:
        """``Processor.record_failure``, after which the copy kept here is stale."""
        self.kept.forget(job.message_id)
        self.processor.record_failure(job, attempts, error)

    # ---- reading ------------------------------------------------------------

    def _messages(self, ids: set[UUID]) -> dict[UUID, Message]:
        found: dict[UUID, Message] = {}
        missing: list[UUID] = []
        for message_id in ids:
            kept = self.kept.get(message_id)
            if isinstance(kept, Message):
                found[message_id] = kept
            else:
                missing.append(message_id)
        for message_id, aggregate in self.loader.get_many(missing).items():
            if isinstance(aggregate, Message):
                found[message_id] = aggregate
        return found

    def _prepare(self, jobs: list[Job], messages: dict[UUID, Message]) -> _Prepared:
        prepared = _Prepared()
        presence: dict[str, set[str]] = {}
        sealing: list[Message] = []
        for job in jobs:
            message = messages.get(job.message_id)
            if message is None:
                continue
            if job.queue == MESSAGE_DELIVERY:
                presence.setdefault(message.tenant_id, set()).update(message.recipient_ids)
            elif job.queue == MESSAGE_ENCRYPTION and not (
                message.encryption or message.shredded or message.cancelled or message.end_to_end
            ):
                sealing.append(message)
        self._notify(jobs, messages, prepared)
        for tenant, users in presence.items():
            prepared.online[tenant] = self.processor.presence.online(tenant, sorted(users))
        if sealing:
            vault = self.processor.crypto.vault
            prepared.services = vault.get_many(
                SERVICE_KEY, [(m.id, service_holder(m)) for m in sealing]
            )
            key_ids = {user_keys_id(m.tenant_id, u) for m in sealing for u in m.participants()}
            prepared.keys = {
                k: v for k, v in self.loader.get_many(key_ids).items() if isinstance(v, UserKeys)
            }
        return prepared

    def _notify(self, jobs: list[Job], messages: dict[UUID, Message], prepared: _Prepared) -> None:
        """Send the notifications of every delivered batch the jobs are about, at once."""
        asked: list[tuple[str, Delivered]] = []
        for job in jobs:
            message = messages.get(job.message_id)
            if job.queue != MESSAGE_NOTIFICATION or message is None:
                continue
            try:
                request = self.processor.notice_request(job, message)
            except Exception as error:
                prepared.notified[job.job_id] = error
                continue
            prepared.notified[job.job_id] = None
            if request is not None:
                asked.append((job.job_id, request))
        if asked:
            answers = self.processor.notifier.notify_many([request for _, request in asked])
            for (job_id, _), answer in zip(asked, answers, strict=True):
                prepared.notified[job_id] = answer

    # ---- running ------------------------------------------------------------

    def _apply(self, job: Job, message: Message, prepared: _Prepared) -> list[Job]:
        processor = self.processor
        if job.queue == MESSAGE_DELIVERY:
            processor.deliver_step(job, message, prepared.online.get(message.tenant_id))
        elif job.queue == BATCH_MESSAGE_SENDING:
            return processor.split_step(job, message)
        elif job.queue == MESSAGE_NOTIFICATION:
            outcomes = prepared.notified.get(job.job_id)
            if isinstance(outcomes, Exception):
                raise outcomes
            if outcomes is not None:
                message.mark_notified(job.part[1:], outcomes, processor.meta(job))
        elif job.queue == MESSAGE_INDEXING:
            if not (message.indexed or message.cancelled):
                processor.indexer.index(message)
                message.mark_indexed(processor.meta(job))
        elif job.queue == MESSAGE_ENCRYPTION:
            self._encrypt(job, message, prepared)
        else:
            raise UnknownJob(job.queue)
        return []

    def _encrypt(self, job: Job, message: Message, prepared: _Prepared) -> None:
        if message.encryption is not None or message.shredded or message.cancelled:
            return
        if message.end_to_end:
            self.processor.record_client_sealed(job, message)
            return
        keys: dict[str, tuple[str, str]] = {}
        for user in message.participants():
            registry = prepared.keys.get(user_keys_id(message.tenant_id, user))
            if registry is None:
                raise NoKeyRegistered(user)
            key_id, entry = registry.current()
            keys[user] = (key_id, entry["publicKeyPem"])
        service = prepared.services.get((message.id, service_holder(message)))
        entries, metadata = self.processor.wrap_keys(message, service, keys)
        message.record_encryption(metadata, ENVELOPE_VERSION, self.processor.meta(job))
        prepared.vault.extend(entries)

    # ---- writing ------------------------------------------------------------

    def _save(
        self,
        jobs: list[Job],
        results: list[JobResult],
        messages: dict[UUID, Message],
        ran: dict[UUID, list[int]],
        prepared: _Prepared,
    ) -> None:
        changed = [messages[mid] for mid in ran if messages[mid].pending_events]
        try:
            # Keys are stored before Encrypted is: an envelope never lacks its key.
            self.processor.crypto.vault.put(prepared.vault)
            conflicted = self._store(changed)
        except Exception as error:
            for message in changed:
                self.kept.forget(message.id)
                for i in ran[message.id]:
                    if results[i].error is None:
                        results[i] = JobResult(error=error)
            return
        for message in messages.values():
            if message.id not in conflicted:
                self.kept.keep(message)
        for message_id in conflicted:
            self.kept.forget(message_id)
            for i in ran[message_id]:
                results[i] = self._alone(jobs[i])

    def _store(self, changed: list[Message]) -> set[UUID]:
        """Store the events of ``changed`` at once; the ids of those that conflicted.

        When a writer elsewhere got to some of them first, the others are stored in a
        second transaction and the conflicting ones are left to the caller.
        """
        if not changed:
            return set()
        pending = {m.id: m.collect_events() for m in changed}
        try:
            self.app.save(*(e for events in pending.values() for e in events))
            return set()
        except IntegrityError:
            stored = self.loader.get_many(list(pending))
        clean = {
            mid
            for mid, events in pending.items()
            if mid in stored and stored[mid].version == events[0].originator_version - 1
        }
        try:
            if clean:
                self.app.save(*(e for mid in clean for e in pending[mid]))
        except IntegrityError:
            return set(pending)
        return set(pending) - clean

    def _alone(self, job: Job) -> JobResult:
        try:
            return JobResult(follow_ups=self.processor.run(job).follow_ups)
        except Exception as error:
            return JobResult(error=error)
