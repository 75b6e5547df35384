"""Sending on the caller's event loop: a send with nothing to read first (or whose
reads the batched reader does) is built on the loop, and its key-vault rows and events
are awaited in the group commits, with no thread waiting for them."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.errors import Invalid, NotFound
from application.keys import missing_keys, user_keys_id
from application.outgoing import Outgoing, Pending, SendResult
from application.policies import first_jobs
from application.sending import DIRECT_ONLY, Sending
from domain.conversation import GROUP, Conversation, direct_conversation_id
from domain.events import Context
from domain.ids import new_id
from domain.keys import UserKeys


class LoopSending(Sending):
    """Sends run on the caller's event loop, when ``*_needs_thread`` says they may."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Direct conversations a send is starting now (its commit in flight), and what
        # tells the sends to the same pair when it is done.
        self._starting: dict[UUID, asyncio.Event] = {}

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
        await self._after_start_of(
            direct_conversation_id(ctx.tenant_id, ctx.actor_id, recipient_id)
        )
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
            raise Invalid(DIRECT_ONLY)
        if outgoing.encrypted:
            await self._learn_key_holders(ctx.tenant_id, found.participant_ids)
        digest = self._digest(f"group:{conversation_id}", outgoing)
        pending = self._new_message(ctx, new_id(), found, GROUP, outgoing, digest)
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
            raise missing_keys(missing)

    async def _after_start_of(self, cid: UUID) -> None:
        """Wait while another send starts the direct conversation ``cid``: this one then
        finds it started (or, should that send have failed, starts it), instead of
        starting it a second time — which would make its whole group commit conflict."""
        starting = self._starting.get(cid)
        while starting is not None:
            await starting.wait()
            starting = self._starting.get(cid)

    async def _commit_async(self, ctx: Context, pending: Pending) -> SendResult:
        assert self._put_async is not None
        if pending.conversation is None:
            return await self._commit_message(ctx, pending)
        cid = pending.conversation[0]
        done = self._starting[cid] = asyncio.Event()
        try:
            return await self._commit_message(ctx, pending)
        finally:
            if self._starting.get(cid) is done:
                del self._starting[cid]
            done.set()

    async def _commit_message(self, ctx: Context, pending: Pending) -> SendResult:
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
