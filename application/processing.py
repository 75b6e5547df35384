"""What each job does: the policy's work, recorded as the message's next event."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from application.jobs import (
    BATCH_MESSAGE_SENDING,
    MESSAGE_CLEANUP,
    MESSAGE_DELIVERY,
    MESSAGE_ENCRYPTION,
    MESSAGE_INDEXING,
    MESSAGE_NOTIFICATION,
    Job,
    batch_part,
)
from application.messaging import Messaging
from application.notices import notice_for
from application.ports import (
    SERVICE_KEY,
    USER_KEY,
    Crypto,
    Delivered,
    Indexer,
    KeyUnwrapError,
    Notifier,
    Outcomes,
    Presence,
    VaultEntry,
    message_key_context,
)
from application.retention import Retention
from application.sealing import SERVICE_HOLDER
from application.turns import Turns
from domain.events import system_context
from domain.message import ENVELOPE_VERSION, Message


class JobNotReady(Exception):
    """The message is not yet in the state this job needs; try again later."""


class ForeignWrappedKey(Exception):
    """The vault's wrapped data key of a message does not unwrap for that message: it
    was damaged or copied from another row. Nothing is wrapped for anyone."""

    safe_to_show = True  # ids only, and says what is wrong

    def __str__(self) -> str:
        return (
            f"the service's wrapped data key of message {self.args[0]} is not bound to it "
            "(copied from another message or damaged): refused, nothing re-wrapped"
        )


class UnknownJob(Exception):
    """A job this service does not know how to run (malformed or from elsewhere)."""


@dataclass
class Outcome:
    """What running a job led to: follow-up jobs to publish right away."""

    follow_ups: list[Job]


class Processor:
    """Runs one job against the application. Idempotent: a repeat records nothing new."""

    def __init__(
        self,
        app: Messaging,
        crypto: Crypto,
        presence: Presence,
        notifier: Notifier,
        indexer: Indexer,
        retention: Retention | None = None,
        notify_preview: bool = False,
    ) -> None:
        self.app = app
        self.crypto = crypto  # the same the application seals with
        self.notify_preview = notify_preview  # NOTIFY_PREVIEW: content in notifications
        self.presence = presence
        self.notifier = notifier
        self.indexer = indexer
        self.retention = retention
        self.turns = Turns()

    def run(self, job: Job) -> Outcome:
        handler = {
            MESSAGE_ENCRYPTION: self.encrypt,
            BATCH_MESSAGE_SENDING: self.split,
            MESSAGE_DELIVERY: self.deliver,
            MESSAGE_NOTIFICATION: self.notify,
            MESSAGE_INDEXING: self.index,
            MESSAGE_CLEANUP: self.cleanup,
        }.get(job.queue)
        if handler is None:
            raise UnknownJob(job.queue)
        return handler(job)

    def _message(self, job: Job) -> Message:
        return self.app.get_message(job.tenant_id, job.message_id)

    def _change(
        self, job: Job, change: Callable[[Message], bool], loaded: Message | None = None
    ) -> None:
        """Apply ``change`` to the message and save it if it recorded an event.

        Jobs of one message take turns (application/turns.py). An attempt starts from
        the newest copy at hand; when a writer elsewhere saved the message meanwhile,
        the save conflicts and the next attempt loads it afresh.
        """
        with self.turns.turn(job.message_id):
            at_hand = [loaded]

            def attempt() -> None:
                message = self.turns.take(job.message_id, at_hand.pop() if at_hand else None)
                if message is None:
                    message = self._message(job)
                    changed = change(message)
                else:
                    try:
                        changed = change(message)
                    except JobNotReady:
                        # The copy at hand may be behind the store: look again first.
                        message = self._message(job)
                        changed = change(message)
                if changed:
                    self.app.save(message)
                self.turns.keep(message)

            self.app.retrying(attempt)

    def meta(self, job: Job) -> dict[str, str]:
        """Who (the system, on this job's behalf) an event the job records comes from."""
        return system_context(job.tenant_id, job.correlation_id, job.job_id, job.priority).as_meta()

    def encrypt(self, job: Job) -> Outcome:
        """Wrap the data key for every participant's current RSA key; record Encrypted."""
        message = self._message(job)
        if message.encryption is not None or message.shredded or message.cancelled:
            if message.shredded:
                # Keys a batch wrapped before it saw the message shredded go too.
                self.crypto.vault.shred(message.id)
            return Outcome([])
        if message.end_to_end:
            # A scheduled client-sealed send, now due: its keys came wrapped by the client.
            self._change(job, lambda m: self.record_client_sealed(job, m), loaded=message)
            return Outcome([])
        holder = service_holder(message)
        service = self.crypto.vault.get(message.id, SERVICE_KEY, holder)
        tenant = message.tenant_id
        keys = {u: self.app.current_public_key(tenant, u) for u in message.participants()}
        entries, metadata = self.wrap_keys(message, service, keys)
        self.crypto.vault.put(entries)

        def change(current: Message) -> bool:
            if current.shredded:
                # Shredded while the keys were being wrapped: they must not outlive it.
                self.crypto.vault.shred(current.id)
                return False
            return current.record_encryption(metadata, ENVELOPE_VERSION, self.meta(job))

        self._change(job, change, loaded=message)
        return Outcome([])

    def record_client_sealed(self, job: Job, message: Message) -> bool:
        """Record the public metadata of a client-sealed message (scheduled, now due)."""
        sealed = message.sealed or {}
        public = {"iv": sealed.get("iv"), "authTag": sealed.get("authTag"), "keyId": None}
        return message.record_encryption(public, ENVELOPE_VERSION, self.meta(job))

    def wrap_keys(
        self,
        message: Message,
        service: VaultEntry | None,
        keys: dict[str, tuple[str, str]],
    ) -> tuple[list[VaultEntry], dict[str, Any]]:
        """The data key wrapped for each participant (``keys``: user → key id, PEM), and
        the public metadata ``Encrypted`` records."""
        if service is None:
            raise JobNotReady("the message's data key is not in the vault")
        context = message_key_context(message.id, service.holder)
        try:
            data_key = self.crypto.keyring.unwrap(service.key_id, service.wrapped_key, context)
        except KeyUnwrapError:
            raise ForeignWrappedKey(message.id) from None
        entries: list[VaultEntry] = []
        recipient_key_ids: dict[str, str] = {}
        for user in message.participants():
            key_id, pem = keys[user]
            wrapped = self.crypto.cipher.wrap_for(pem, data_key)
            entries.append(VaultEntry(message.id, user, key_id, wrapped, USER_KEY))
            recipient_key_ids[user] = key_id
        sealed = message.sealed or {}
        metadata = {
            "iv": sealed.get("iv"),
            "authTag": sealed.get("authTag"),
            "keyId": service.key_id,
            "recipientKeyIds": recipient_key_ids,
        }
        return entries, metadata

    def split(self, job: Job) -> Outcome:
        return Outcome(self.split_step(job, self._message(job)))

    def split_step(self, job: Job, message: Message) -> list[Job]:
        """A group message's delivery jobs, one per batch of recipients not yet reached."""
        if not message.ready_for_delivery:
            raise JobNotReady("the message is not encrypted yet")
        if message.cancelled:
            return []
        return [
            Job(
                MESSAGE_DELIVERY,
                message.id,
                batch_part(key),
                job.tenant_id,
                1,
                job.correlation_id,
                job.priority,
            )
            for key in message.batch_keys()
            if key not in message.delivered
        ]

    def deliver(self, job: Job) -> Outcome:
        self._change(job, lambda message: self.deliver_step(job, message))
        return Outcome([])

    def deliver_step(self, job: Job, message: Message, online: set[str] | None = None) -> bool:
        """Record ``Delivered`` for the job's batch (``online``: who is connected, if known)."""
        batch = _batch_key(job)
        if batch in message.delivered or message.cancelled:
            return False
        if not message.ready_for_delivery:
            raise JobNotReady("the message is not encrypted yet")
        batches = message.batches()
        if int(batch) >= len(batches):
            raise UnknownJob(job.job_id)
        recipients = batches[int(batch)]
        if online is None:
            online = self.presence.online(message.tenant_id, recipients)
        message.deliver(
            batch,
            online=[u for u in recipients if u in online],
            offline=[u for u in recipients if u not in online],
            meta=self.meta(job),
        )
        return True

    def notify(self, job: Job) -> Outcome:
        batch = _batch_key(job)
        message = self._message(job)
        outcomes = self.notify_step(job, message)
        if outcomes is not None:
            self._change(job, lambda m: m.mark_notified(batch, outcomes, self.meta(job)), message)
        return Outcome([])

    def notify_step(self, job: Job, message: Message) -> Outcomes | None:
        """Send the batch's notifications; what each recipient got, or None if done already."""
        request = self.notice_request(job, message)
        return None if request is None else self.notifier.notify(*request)

    def notice_request(self, job: Job, message: Message) -> Delivered | None:
        """What the job's delivered batch is to be told, or None if it was already."""
        batch = _batch_key(job)
        if batch in message.notified_batches or not message.notify:
            return None
        recipients = message.delivered.get(batch)
        if recipients is None:
            raise JobNotReady("the batch is not delivered yet")
        offline = [u for u in recipients if u in message.offline]
        online = [u for u in recipients if u not in message.offline]
        return notice_for(message, self.notify_preview), offline, online

    def index(self, job: Job) -> Outcome:
        message = self._message(job)
        if message.indexed or message.cancelled:
            return Outcome([])
        self.indexer.index(message)

        self._change(job, lambda m: m.mark_indexed(self.meta(job)), message)
        return Outcome([])

    def cleanup(self, job: Job) -> Outcome:
        """Retention (application/retention.py): shred what expired, unless on hold."""
        if self.retention is not None:
            self.retention.run(datetime.now(UTC), job)
        return Outcome([])

    def record_failure(self, job: Job, attempts: int, error: str) -> None:
        """The job ran out of attempts: say so on the message (no content, ever)."""
        if job.queue == MESSAGE_CLEANUP:
            return  # not about one message; the worker has logged it, the next run retries

        def change(message: Message) -> bool:
            message.fail(job.queue, job.job_id, attempts, error, self.meta(job))
            return True

        self._change(job, change)


def service_holder(message: Message) -> str:
    """The vault holder of a server-sealed message's data key, wrapped by the keyring."""
    return f"{SERVICE_HOLDER}:{(message.sealed or {}).get('dekId')}"


def _batch_key(job: Job) -> str:
    if not job.part.startswith("b") or not job.part[1:].isdigit():
        raise UnknownJob(job.job_id)
    return job.part[1:]
