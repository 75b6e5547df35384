"""Starting conversations and changing who takes part in them."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import IntegrityError

from application.errors import Invalid, NotFound
from application.store import Store
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


class Conversations(Store):
    """Conversations: started, and their participants changed."""

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


def _conversation_rule(error: ConversationError) -> str:
    if isinstance(error, DirectIsFixed):
        return "a direct conversation's participants cannot change"
    if isinstance(error, TooManyParticipants):
        return f"a conversation holds at most {error} participants"
    if isinstance(error, NotAParticipant):
        return "not a participant"
    return "this change to the conversation is not allowed"
