"""The Messaging application: every command and the queries on the event store."""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import IntegrityError, Recording

from application.errors import (
    Conflict,
    ContentShredded,
    EncryptionRequired,
    Forbidden,
    Invalid,
    MissingKeys,
    NotFound,
    NotReady,
    OnLegalHold,
)
from application.jobs import BadJobId, Job
from application.policies import first_jobs
from application.ports import (
    DIGEST_HOLDER,
    DIGEST_REF,
    DIGEST_ROW,
    SEARCH_HOLDER,
    SEARCH_ROW,
    SERVICE_KEY,
    USER_KEY,
    BlindIndex,
    Cipher,
    InvalidPublicKey,
    Keyring,
    KeyVault,
    VaultEntry,
    message_key_context,
)
from application.search import blind_words
from domain.access import ENVELOPE, MESSAGE, Access
from domain.conversation import (
    DIRECT,
    GROUP,
    Conversation,
    ConversationError,
    DirectIsFixed,
    NotAParticipant,
    TooManyParticipants,
    direct_conversation_id,
)
from domain.events import Context
from domain.ids import new_id
from domain.keys import NoKeyRegistered, UserKeys
from domain.keys import user_keys_id as _user_keys_id
from domain.message import ENVELOPE_VERSION, Message, message_id_for

T = TypeVar("T")
SERVICE_HOLDER = "service"
SHRED_REASONS = ("erasure", "retention")
SHREDDED = (
    "this message's content key was destroyed (shredded): its content cannot be read any more"
)
CONFLICT_RETRIES = 20
LISTENERS_EVERY = 0.002


# Asked for every participant of every encrypted send: a uuid5 of JSON each time.
user_keys_id = functools.lru_cache(maxsize=65_536)(_user_keys_id)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def aad_for(message_id: UUID) -> bytes:
    return f"courier:message:{message_id}:{ENVELOPE_VERSION}".encode()


@dataclass(frozen=True)
class SendResult:
    message: Message
    jobs: list[Job]
    created: bool


@dataclass(frozen=True)
class Outgoing:
    """What a sender asks for, before any rule is applied."""

    content: str | None = None
    sealed: dict[str, Any] | None = None
    encrypted: bool = False
    notify: bool = True
    index: bool = True
    client_message_id: str | None = None
    send_at: str | None = None  # a scheduled send: when it is due (RFC 3339, UTC)
    priority: str = ""  # "high" or "low"; empty: normal


@dataclass
class Pending:
    """A new message not saved yet: its data keys, and the direct conversation it starts."""

    message: Message
    vault: list[VaultEntry]
    conversation: tuple[UUID, list[Any]] | None = None


@dataclass(frozen=True)
class Participants:
    """Who takes part in a conversation, when its aggregate need not be loaded."""

    id: UUID
    participant_ids: list[str]


class KnownIds:
    """Ids of aggregates known to exist (they never stop existing), bounded in size."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._ids: OrderedDict[UUID, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def remember(self, item: UUID) -> None:
        with self._lock:
            self._ids[item] = None
            if len(self._ids) > self.limit:
                self._ids.popitem(last=False)


@dataclass
class Crypto:
    cipher: Cipher
    keyring: Keyring
    vault: KeyVault
    blind_index: BlindIndex | None = None  # exact-word search over encrypted messages


class Messaging(Application[UUID]):
    """Commands and event-store queries of Courier (docs/API.md §4)."""

    name = "Messaging"
    env = {"COMPRESSOR_TOPIC": ""}

    def __init__(self, crypto: Crypto, env: dict[str, str] | None = None) -> None:
        super().__init__(env=env)
        self.crypto = crypto
        self._listeners: list[Callable[[int], None]] = []
        self._listeners_lock = threading.Lock()
        self._put: Callable[[list[Any]], list[Recording[UUID]]] | None = None
        self._put_async: (
            tuple[
                Callable[[list[Any]], Awaitable[list[Recording[UUID]]]],
                Callable[[list[VaultEntry]], Awaitable[None]] | None,
            ]
            | None
        ) = None
        self._known_direct = KnownIds()
        self._get_async: Callable[[list[UUID]], Awaitable[list[Any]]] | None = None
        self._unheard: int | None = None  # newest position saved on the loop, not yet told
        self._known_key_holders = KnownIds()
        # REQUIRE_ENCRYPTION: every tenant's messages must be encrypted (server-sealed or
        # end-to-end); a plain-text send is refused before anything is stored.
        self.require_encryption = False

    def record_with(self, put: Callable[[list[Any]], list[Recording[UUID]]]) -> None:
        """Route every save through ``put`` (e.g. a group committer)."""
        self._put = put

    def read_async_with(self, get_many: Callable[[list[UUID]], Awaitable[list[Any]]]) -> None:
        """Let ``send_group_async`` read on the caller's event loop: ``get_many(ids)`` is
        awaited for the aggregates of ``ids`` (None where there is none), in order."""
        self._get_async = get_many

    def record_async_with(
        self,
        put_events: Callable[[list[Any]], Awaitable[list[Recording[UUID]]]],
        put_keys: Callable[[list[VaultEntry]], Awaitable[None]] | None,
    ) -> None:
        """Let ``send_direct_async`` store on the caller's event loop: ``put_events`` and
        ``put_keys`` are awaited instead of a thread waiting for the group commits.

        Without ``put_keys``, a send's key-vault rows go to ``put_events`` among its
        events (as ``VaultEntry`` items), to be stored in the same transaction."""
        self._put_async = (put_events, put_keys)

    async def _save_async(self, *events: Any) -> list[Recording[UUID]]:
        assert self._put_async is not None
        recordings = await self._put_async[0](list(events))
        positions = [r.notification.id for r in recordings if r and r.notification is not None]
        if positions:
            # Listeners (threads, woken at a cost) hear of the newest position saved at
            # most every LISTENERS_EVERY seconds, not of every save.
            if self._unheard is None:
                asyncio.get_running_loop().call_later(LISTENERS_EVERY, self._tell_listeners)
                self._unheard = 0
            self._unheard = max(self._unheard, *positions)
        return recordings

    def _tell_listeners(self) -> None:
        position, self._unheard = self._unheard, None
        if position:
            for listener in list(self._listeners):
                listener(position)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """eventsourcing's ``save``, with events taken as they are: its
        ``collect_events`` tells an event from an aggregate with a runtime Protocol
        check, which cost a unit of work of the worker a twentieth of its time."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if isinstance(obj, DomainEvent):
                processing_event.events.append(obj)
            elif obj is not None:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's (deprecated) hook
        return recordings

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        if self._put is None or processing_event.tracking is not None:
            return super()._record(processing_event)
        return self._put(list(processing_event.events))

    # ---- plumbing ----------------------------------------------------------

    def on_saved(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(last_position)`` after every save in this process."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        positions = [r.notification.id for r in recordings if r.notification is not None]
        if positions:
            for listener in list(self._listeners):
                listener(max(positions))

    def _get(self, cls: type[T], aggregate_id: UUID, tenant_id: str) -> T:
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFound(f"{cls.__name__.lower()} not found") from None
        if not isinstance(aggregate, cls) or getattr(aggregate, "tenant_id", None) != tenant_id:
            raise NotFound(f"{cls.__name__.lower()} not found")
        return aggregate

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run a load-change-save step again when another writer got there first."""
        for _ in range(CONFLICT_RETRIES):
            try:
                return attempt()
            except IntegrityError:
                continue
        return attempt()

    # ---- conversations -------------------------------------------------------

    def start_conversation(
        self, ctx: Context, kind: str, participant_ids: list[str], title: str | None
    ) -> Conversation:
        people = list(dict.fromkeys([ctx.actor_id, *participant_ids]))
        if kind == DIRECT:
            if len(people) != 2:
                raise Invalid("a direct conversation has exactly one other participant")
            cid = direct_conversation_id(ctx.tenant_id, people[0], people[1])
            try:
                return self._get(Conversation, cid, ctx.tenant_id)
            except NotFound:
                pass
            conversation = Conversation(
                tenant_id=ctx.tenant_id,
                kind=DIRECT,
                participant_ids=people,
                title=title,
                meta=ctx.as_meta(),
            )
            try:
                self.save(conversation)
            except IntegrityError:
                return self._get(Conversation, cid, ctx.tenant_id)
            return conversation
        conversation = Conversation(
            tenant_id=ctx.tenant_id,
            kind=GROUP,
            participant_ids=people,
            title=title,
            meta=ctx.as_meta(),
        )
        self.save(conversation)
        return conversation

    def get_conversation(self, ctx: Context, conversation_id: UUID) -> Conversation:
        conversation = self._get(Conversation, conversation_id, ctx.tenant_id)
        if ctx.actor_id not in conversation.participant_ids:
            raise NotFound("conversation not found")
        return conversation

    def add_participants(
        self, ctx: Context, conversation_id: UUID, user_ids: list[str]
    ) -> Conversation:
        def attempt() -> Conversation:
            conversation = self.get_conversation(ctx, conversation_id)
            try:
                conversation.add_participants(user_ids, meta=ctx.as_meta())
            except ConversationError as error:
                raise Invalid(_conversation_rule(error)) from None
            self.save(conversation)
            return conversation

        return self.retrying(attempt)

    def remove_participant(self, ctx: Context, conversation_id: UUID, user_id: str) -> Conversation:
        def attempt() -> Conversation:
            conversation = self.get_conversation(ctx, conversation_id)
            if user_id not in conversation.participant_ids:
                raise NotFound("participant not found")
            try:
                conversation.remove_participant(user_id, meta=ctx.as_meta())
            except ConversationError as error:
                raise Invalid(_conversation_rule(error)) from None
            self.save(conversation)
            return conversation

        return self.retrying(attempt)

    # ---- sending -------------------------------------------------------------

    def send_direct(self, ctx: Context, recipient_id: str, outgoing: Outgoing) -> SendResult:
        self._check_direct(ctx, recipient_id)

        def build(mid: UUID, digest: str) -> Pending:
            return self._direct(ctx, recipient_id, outgoing, mid, digest)

        return self._send(ctx, f"direct:{recipient_id}", outgoing, build)

    async def send_direct_async(
        self, ctx: Context, recipient_id: str, outgoing: Outgoing
    ) -> SendResult:
        """``send_direct`` on the caller's event loop, for a send that
        ``direct_needs_thread`` finds has nothing to read first: the message is built on
        the loop, its key-vault rows and then its events are awaited, each in a group
        commit, and no thread waits for them."""
        self._check_direct(ctx, recipient_id)
        if self.direct_needs_thread(ctx, recipient_id, outgoing):
            raise RuntimeError("this send reads the event store: run send_direct on a thread")
        if outgoing.encrypted and self._get_async is not None:
            await self._learn_key_holders(ctx.tenant_id, [ctx.actor_id, recipient_id])
        pending = self._direct(
            ctx,
            recipient_id,
            outgoing,
            new_id(),
            self._digest(f"direct:{recipient_id}", outgoing),
        )
        return await self._commit_async(ctx, pending)

    async def send_group_async(
        self, ctx: Context, conversation_id: UUID, outgoing: Outgoing
    ) -> SendResult:
        """``send_group`` on the caller's event loop, for a send that
        ``group_needs_thread`` leaves to it: the conversation (and the key registries not
        known yet) are read by the batched reader, the message is built on the loop and
        its key-vault rows and events are awaited in the group commits."""
        if self.group_needs_thread(outgoing):
            raise RuntimeError("this send reads the event store: run send_group on a thread")
        assert self._get_async is not None
        [found] = await self._get_async([conversation_id])
        if (
            not isinstance(found, Conversation)
            or found.tenant_id != ctx.tenant_id
            or ctx.actor_id not in found.participant_ids
        ):
            raise NotFound("conversation not found")
        if found.kind != GROUP:
            raise Invalid("this conversation is direct: send with /api/messages/direct")
        if outgoing.encrypted:
            await self._learn_key_holders(ctx.tenant_id, found.participant_ids)
        digest = self._digest(f"group:{conversation_id}", outgoing)
        pending = self._new_message(ctx, new_id(), found, "group", outgoing, digest)
        return await self._commit_async(ctx, pending)

    def group_needs_thread(self, outgoing: Outgoing) -> bool:
        """Whether a group send must run ``send_group`` on a thread (a ``clientMessageId``
        to look up, client-sealed keys, or no async store and reader set)."""
        return (
            self._put_async is None
            or self._get_async is None
            or outgoing.client_message_id is not None
            or outgoing.sealed is not None
        )

    async def _learn_key_holders(self, tenant_id: str, user_ids: list[str]) -> None:
        """Read the key registries of ``user_ids`` not known to hold a key; raise
        ``MissingKeys`` naming whoever has none."""
        assert self._get_async is not None
        unknown = [u for u in user_ids if user_keys_id(tenant_id, u) not in self._known_key_holders]
        if not unknown:
            return
        ids = [user_keys_id(tenant_id, u) for u in unknown]
        missing = []
        for user, holder, keys in zip(unknown, ids, await self._get_async(ids), strict=True):
            if isinstance(keys, UserKeys) and keys.current_key_id is not None:
                self._known_key_holders.remember(holder)
            else:
                missing.append(user)
        if missing:
            raise _missing_keys(missing)

    async def _commit_async(self, ctx: Context, pending: Pending) -> SendResult:
        assert self._put_async is not None
        put_keys = self._put_async[1]
        if pending.vault and put_keys is not None:
            await put_keys(pending.vault)
        # Keys are stored before or with the events: an envelope never lacks its key.
        events = [*pending.message.collect_events(), *(pending.vault if put_keys is None else ())]
        if pending.conversation is None:
            await self._save_async(*events)
        else:
            cid, started = pending.conversation
            try:
                await self._save_async(*started, *events)
            except IntegrityError:
                await self._save_async(*events)  # the conversation exists
            self._known_direct.remember(cid)
        message = pending.message
        return SendResult(message, first_jobs(message, ctx.correlation_id), created=True)

    def _check_direct(self, ctx: Context, recipient_id: str) -> None:
        if recipient_id == ctx.actor_id:
            raise Invalid("a direct message needs a recipient other than the sender")

    def direct_needs_thread(self, ctx: Context, recipient_id: str, outgoing: Outgoing) -> bool:
        """Whether this direct send must read first (a ``clientMessageId`` to look up,
        client-sealed keys, a key holder not yet known), or no async store is set: then
        ``send_direct`` runs on a thread, else ``send_direct_async`` on the loop."""
        if self._put_async is None:
            return True
        if outgoing.client_message_id is not None or outgoing.sealed is not None:
            return True
        if not outgoing.encrypted or self._get_async is not None:
            return False
        return any(
            user_keys_id(ctx.tenant_id, user) not in self._known_key_holders
            for user in (ctx.actor_id, recipient_id)
        )

    def _direct(
        self, ctx: Context, recipient_id: str, outgoing: Outgoing, mid: UUID, digest: str
    ) -> Pending:
        cid = direct_conversation_id(ctx.tenant_id, ctx.actor_id, recipient_id)
        pair = Participants(cid, [ctx.actor_id, recipient_id])
        pending = self._new_message(ctx, mid, pair, "direct", outgoing, digest)
        if cid not in self._known_direct:
            # Started in the same transaction as the message; should it exist already
            # (its id is the pair's), the message is saved alone.
            conversation = Conversation(
                tenant_id=ctx.tenant_id,
                kind=DIRECT,
                participant_ids=pair.participant_ids,
                title=None,
                meta=ctx.as_meta(),
            )
            pending.conversation = (cid, list(conversation.collect_events()))
        return pending

    def send_group(self, ctx: Context, conversation_id: UUID, outgoing: Outgoing) -> SendResult:
        target = f"group:{conversation_id}"

        def build(mid: UUID, digest: str) -> Pending:
            conversation = self.get_conversation(ctx, conversation_id)
            if conversation.kind != GROUP:
                raise Invalid("this conversation is direct: send with /api/messages/direct")
            return self._new_message(ctx, mid, conversation, "group", outgoing, digest)

        return self._send(ctx, target, outgoing, build)

    def _send(
        self,
        ctx: Context,
        target: str,
        outgoing: Outgoing,
        build: Callable[[UUID, str], Pending],
    ) -> SendResult:
        digest = self._digest(target, outgoing)
        if outgoing.client_message_id is None:
            mid = new_id()
        else:
            mid = message_id_for(ctx.tenant_id, ctx.actor_id, outgoing.client_message_id)
            existing = self._existing_send(ctx, mid, digest)
            if existing is not None:
                return existing
        pending = build(mid, digest)
        if pending.vault:
            self.crypto.vault.put(pending.vault)
        events = list(pending.message.collect_events())
        try:
            self._save_new(events, pending.conversation)
        except IntegrityError:
            existing = self._existing_send(ctx, mid, digest)
            if existing is None:
                raise
            return existing
        message = pending.message
        return SendResult(message, first_jobs(message, ctx.correlation_id), created=True)

    def _save_new(self, events: list[Any], conversation: tuple[UUID, list[Any]] | None) -> None:
        """Save a new message's events, with those of its new conversation if any."""
        if conversation is None:
            self.save(*events)
            return
        cid, started = conversation
        try:
            self.save(*started, *events)
        except IntegrityError:
            # The conversation exists, or the message does (a repeated clientMessageId):
            # saved alone, the message tells which.
            self.save(*events)
        self._known_direct.remember(cid)

    def _existing_send(self, ctx: Context, mid: UUID, digest: str) -> SendResult | None:
        try:
            message: object = self.repository.get(mid)
        except AggregateNotFoundError:
            return None
        if (
            not isinstance(message, Message)
            or message.tenant_id != ctx.tenant_id
            or message.sender_id != ctx.actor_id
        ):
            raise Conflict("clientMessageId is already used")
        stored = self._stored_digest(message)
        if stored is None:
            raise Conflict(
                "clientMessageId was used by a message since shredded: send with a new one"
            )
        if not hmac.compare_digest(stored, digest):
            raise Conflict("clientMessageId was already used for a different message")
        return SendResult(message, first_jobs(message, ctx.correlation_id), created=False)

    def _stored_digest(self, message: Message) -> str | None:
        """The digest of the send that made ``message``: in the key vault under the
        reference its ``Created`` names (None once shredded), or, in events recorded
        before digests left the log, the digest itself."""
        reference = message.content_digest
        if not reference.startswith(DIGEST_REF):
            return reference or None
        holder = DIGEST_HOLDER + reference[len(DIGEST_REF) :]
        entry = self.crypto.vault.get(message.id, DIGEST_ROW, holder)
        return None if entry is None else entry.wrapped_key.decode("ascii")

    def _digest(self, target: str, outgoing: Outgoing) -> str:
        """What tells a repeated idempotent send from a different one: only a send with a
        ``clientMessageId`` has one. Others carry none, so that identical messages are
        not linkable by it. It is kept in the key vault, never in the event log, so that
        shredding the message destroys it with the keys."""
        if outgoing.client_message_id is None:
            return ""
        canonical = json.dumps(
            [target, outgoing.content, outgoing.sealed, outgoing.encrypted],
            sort_keys=True,
            separators=(",", ":"),
        )
        return self.crypto.keyring.digest(canonical.encode())

    def _new_message(
        self,
        ctx: Context,
        mid: UUID,
        conversation: Participants | Conversation,
        kind: str,
        outgoing: Outgoing,
        digest: str,
    ) -> Pending:
        if ctx.actor_id not in conversation.participant_ids:
            raise NotFound("conversation not found")
        recipients = [p for p in conversation.participant_ids if p != ctx.actor_id]
        if not recipients:
            raise Invalid("the conversation has no other participant to send to")
        meta = ctx.as_meta()
        if outgoing.priority:
            meta["priority"] = outgoing.priority
        encrypted = outgoing.encrypted or outgoing.sealed is not None
        if not encrypted and self.require_encryption:
            raise EncryptionRequired(
                "this service requires every message to be encrypted (REQUIRE_ENCRYPTION): "
                'send "encrypted": true, or "sealed" content',
                [{"field": "encrypted", "issue": "must be true, or the content sealed"}],
            )
        sealed: dict[str, Any] | None = None
        vault: list[VaultEntry] = []
        search_tokens: list[str] | None = None
        if outgoing.sealed is not None:
            sealed, vault = self._client_sealed(ctx, mid, conversation, outgoing.sealed)
        elif encrypted:
            self._require_keys(ctx.tenant_id, [ctx.actor_id, *recipients])
            sealed, vault = self._server_seal(mid, outgoing.content or "")
            search_tokens = self._search_tokens(ctx.tenant_id, outgoing)
        # What is derived from the content goes in the key vault, deleted by shredding,
        # beside the keys (in their write: no round trip of its own), never in the log.
        # A send with a clientMessageId names its rows by a random reference, so that
        # a concurrent send of the same id cannot overwrite the winner's.
        reference = new_id().hex if digest else ""
        if digest:
            holder = DIGEST_HOLDER + reference
            vault.append(VaultEntry(mid, holder, "hmac", digest.encode(), DIGEST_ROW))
        if search_tokens:
            tokens = "\n".join(search_tokens).encode()
            holder = SEARCH_HOLDER + reference
            vault.append(VaultEntry(mid, holder, "blind-index", tokens, SEARCH_ROW))
        message = Message(
            search_tokens=None,
            id=mid,
            tenant_id=ctx.tenant_id,
            conversation_id=conversation.id,
            sender_id=ctx.actor_id,
            recipient_ids=recipients,
            kind=kind,
            encrypted=encrypted,
            notify=outgoing.notify,
            index=outgoing.index,
            content=None if encrypted else outgoing.content,
            sealed=sealed,
            end_to_end=outgoing.sealed is not None,
            content_digest=DIGEST_REF + reference if digest else "",
            client_message_id=outgoing.client_message_id,
            meta=meta,
            send_at=outgoing.send_at,
        )
        if outgoing.send_at is not None:
            # Sealed for its recipients (or its client-sealed metadata recorded) when due.
            return Pending(message, vault)
        if outgoing.sealed is not None:
            assert sealed is not None
            public = {"iv": sealed.get("iv"), "authTag": sealed.get("authTag"), "keyId": None}
            message.record_encryption(public, ENVELOPE_VERSION, meta=meta)
        elif encrypted:
            message.queue_encryption(meta=meta)
        return Pending(message, vault)

    def _search_tokens(self, tenant_id: str, outgoing: Outgoing) -> list[str] | None:
        """Blind-index tokens of a server-sealed message, made while its plaintext is here."""
        index = self.crypto.blind_index
        if index is None or not outgoing.index or outgoing.content is None:
            return None
        return index.tokens(tenant_id, blind_words(outgoing.content))

    def _server_seal(self, mid: UUID, content: str) -> tuple[dict[str, Any], list[VaultEntry]]:
        sealed = self.crypto.cipher.seal(content.encode("utf-8"), aad_for(mid))
        dek_id = new_id().hex
        holder = f"{SERVICE_HOLDER}:{dek_id}"
        key_id, wrapped = self.crypto.keyring.wrap(
            sealed.data_key, message_key_context(mid, holder)
        )
        entry = VaultEntry(mid, holder, key_id, wrapped, SERVICE_KEY)
        envelope = {
            "ciphertext": b64(sealed.ciphertext),
            "iv": b64(sealed.iv),
            "authTag": b64(sealed.auth_tag),
            "aad": b64(sealed.aad),
            "dekId": dek_id,
            "serviceKeyId": key_id,
        }
        return envelope, [entry]

    def _client_sealed(
        self,
        ctx: Context,
        mid: UUID,
        conversation: Participants | Conversation,
        sealed: dict[str, Any],
    ) -> tuple[dict[str, Any], list[VaultEntry]]:
        wrapped: dict[str, str] = sealed["wrappedKeys"]
        missing = [p for p in conversation.participant_ids if p not in wrapped]
        strangers = [u for u in wrapped if u not in conversation.participant_ids]
        if missing or strangers:
            raise Invalid(
                "sealed.wrappedKeys must hold a wrapped key for every participant, "
                "and for nobody else",
                [
                    *(
                        {"field": "sealed.wrappedKeys", "issue": f"missing for {user}"}
                        for user in missing
                    ),
                    *(
                        {"field": "sealed.wrappedKeys", "issue": f"{user} is not a participant"}
                        for user in strangers
                    ),
                ],
            )
        entries = []
        for user in conversation.participant_ids:
            key_id = self._current_key_id(ctx.tenant_id, user) or "client"
            entries.append(VaultEntry(mid, user, key_id, unb64(wrapped[user]), USER_KEY))
        envelope: dict[str, Any] = {
            k: sealed[k] for k in ("ciphertext", "iv", "authTag") if k in sealed
        }
        if sealed.get("aad") is not None:
            envelope["aad"] = sealed["aad"]
        return envelope, entries

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

    # ---- operating the queues ------------------------------------------------

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

    # ---- keys ----------------------------------------------------------------

    def register_key(self, ctx: Context, public_key_pem: str) -> dict[str, str]:
        try:
            info = self.crypto.cipher.inspect_public_key(public_key_pem)
        except InvalidPublicKey as error:
            raise Invalid(str(error), [{"field": "publicKeyPem", "issue": str(error)}]) from None
        created_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")

        def attempt() -> dict[str, str]:
            keys = self._user_keys(ctx.tenant_id, ctx.actor_id)
            if keys is None:
                keys = UserKeys(
                    tenant_id=ctx.tenant_id,
                    user_id=ctx.actor_id,
                    meta=ctx.as_meta(),
                )
            if keys.current_key_id != info.key_id:
                keys.register(
                    info.key_id, public_key_pem, info.fingerprint, created_at, ctx.as_meta()
                )
                self.save(keys)
            entry = keys.keys[info.key_id]
            return {
                "keyId": info.key_id,
                "fingerprint": info.fingerprint,
                "createdAt": entry["createdAt"],
            }

        return self.retrying(attempt)

    def public_key(self, ctx: Context, user_id: str, key_id: str | None = None) -> dict[str, str]:
        """A user's current public key, or (``key_id``) any key they ever registered."""
        keys = self._user_keys(ctx.tenant_id, user_id)
        if keys is None or keys.current_key_id is None:
            raise NotFound("no public key registered for this user")
        if key_id is None:
            key_id, entry = keys.current()
        elif key_id in keys.keys:
            entry = keys.keys[key_id]
        else:
            raise NotFound("this user never registered a key with this key id")
        return {
            "userId": user_id,
            "keyId": key_id,
            "publicKeyPem": entry["publicKeyPem"],
            "fingerprint": entry["fingerprint"],
        }

    def _user_keys(self, tenant_id: str, user_id: str) -> UserKeys | None:
        try:
            keys: object = self.repository.get(user_keys_id(tenant_id, user_id))
        except AggregateNotFoundError:
            return None
        return keys if isinstance(keys, UserKeys) else None

    def _current_key_id(self, tenant_id: str, user_id: str) -> str | None:
        keys = self._user_keys(tenant_id, user_id)
        return keys.current_key_id if keys else None

    def current_public_key(self, tenant_id: str, user_id: str) -> tuple[str, str]:
        keys = self._user_keys(tenant_id, user_id)
        if keys is None:
            raise NoKeyRegistered(user_id)
        key_id, entry = keys.current()
        return key_id, entry["publicKeyPem"]

    def _require_keys(self, tenant_id: str, user_ids: list[str]) -> None:
        # A registered key is only ever replaced, never removed: who had one has one.
        missing = []
        for user in user_ids:
            holder = user_keys_id(tenant_id, user)
            if holder in self._known_key_holders:
                continue
            if self._current_key_id(tenant_id, user) is None:
                missing.append(user)
            else:
                self._known_key_holders.remember(holder)
        if missing:
            raise _missing_keys(missing)

    # ---- reading a message ---------------------------------------------------

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

    async def save_async(self, *aggregates: Any) -> None:
        """Save new aggregates' events through the async store, awaiting the commit."""
        await self._save_async(*(e for a in aggregates for e in a.collect_events()))

    def mark_read(self, ctx: Context, message_id: UUID) -> Message:
        def attempt() -> Message:
            message = self.visible_message(ctx, message_id)
            if ctx.actor_id not in message.recipient_ids:
                raise Forbidden("only a recipient can mark a message read")
            if message.mark_read(ctx.actor_id, meta=ctx.as_meta()):
                self.save(message)
            return message

        return self.retrying(attempt)

    def envelope(self, ctx: Context, message_id: UUID) -> dict[str, Any]:
        """The sealed content with its data key wrapped for the caller (docs/API.md §4.2, §9).

        Only the message's sender and recipients hold a wrapped key; fetching one is
        recorded as an ``Access`` record (``Viewed``) of the envelope.
        """
        message = self.visible_message(ctx, message_id)
        if not message.encrypted:
            raise NotFound("this message is not encrypted, so it has no envelope")
        entry = (
            None if message.shredded else self.crypto.vault.get(message.id, USER_KEY, ctx.actor_id)
        )
        if entry is None:
            if message.encryption is None and not message.shredded:
                raise NotReady(
                    "the message is still being encrypted; ask again once its status is encrypted"
                )
            # Keys are written before Encrypted is recorded: none now means destroyed.
            raise ContentShredded(SHREDDED)
        self.save(Access.viewed(ctx.as_meta(), ENVELOPE, None, [str(message.id)]))
        sealed = message.sealed or {}
        return {
            "messageId": str(message.id),
            "algorithm": "AES-256-GCM",
            "ciphertext": sealed.get("ciphertext"),
            "iv": sealed.get("iv"),
            "authTag": sealed.get("authTag"),
            "aad": sealed.get("aad"),
            "wrappedKey": b64(entry.wrapped_key),
            "keyAlgorithm": "RSA-OAEP-256",
            "recipientKeyId": entry.key_id,
            "encryptionVersion": message.encryption_version,
        }

    # ---- shredding -------------------------------------------------------------

    def _check_no_hold(self, ctx: Context, message: Message) -> None:
        """Refuse to destroy the content of a message whose conversation is on hold."""
        try:
            conversation = self._get(Conversation, message.conversation_id, ctx.tenant_id)
        except NotFound:
            return
        if conversation.on_hold:
            raise _hold_refusal()

    def shred(self, ctx: Context, message_id: UUID, reason: str) -> dict[str, Any]:
        """Destroy a message's wrapped data keys and record ``Shredded`` (docs/API.md §4.2, §9).

        The keys go first: should recording fail, the content is unreadable all the
        same and a repeat finishes the job. The events stay, for the audit trail.
        Repeating it is harmless. A conversation under legal hold refuses it
        (``OnLegalHold``, 409), as it stops retention.
        """
        if reason not in SHRED_REASONS:
            raise Invalid(
                f"reason must be one of {', '.join(SHRED_REASONS)}",
                [{"field": "reason", "issue": f"must be one of {', '.join(SHRED_REASONS)}"}],
            )
        destroyed = 0

        def attempt() -> Message:
            nonlocal destroyed
            message = self._get(Message, message_id, ctx.tenant_id)
            if not message.encrypted:
                raise Invalid(
                    "only an encrypted message has a content key to destroy; a plain-text "
                    "message's content is part of the event log"
                )
            if not message.shredded:
                self._check_no_hold(ctx, message)
            destroyed += self.crypto.vault.shred(message.id)
            if not message.shredded:
                message.shred(reason=reason, meta=ctx.as_meta())
                self.save(message)
            return message

        message = self.retrying(attempt)
        # A key an encryption job wrote while Shredded was being saved goes now; one
        # written later finds the message shredded and is destroyed by that job.
        destroyed += self.crypto.vault.shred(message.id)
        return {
            "messageId": str(message.id),
            "shredded": True,
            "reason": reason,
            "keysDestroyed": destroyed,
        }


def _hold_refusal() -> OnLegalHold:
    return OnLegalHold(
        "the message's conversation is under a legal hold: its content cannot be shredded "
        "until an auditor releases the hold (DELETE /api/audit/conversations/{id}/hold)",
        [{"field": "conversationId", "issue": "under legal hold"}],
    )


def _missing_keys(missing: list[str]) -> MissingKeys:
    return MissingKeys(
        "an encrypted message needs a registered public key for every participant; "
        f"missing for: {', '.join(missing)}",
        [{"field": "userId", "issue": f"no public key registered for {u}"} for u in missing],
    )


def _conversation_rule(error: ConversationError) -> str:
    if isinstance(error, DirectIsFixed):
        return "a direct conversation's participants cannot change"
    if isinstance(error, TooManyParticipants):
        return f"a conversation holds at most {error} participants"
    if isinstance(error, NotAParticipant):
        return "not a participant"
    return "this change to the conversation is not allowed"
