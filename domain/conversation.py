"""The Conversation aggregate: who takes part in a direct or group exchange."""

from __future__ import annotations

import functools
import json
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from eventsourcing.domain import Aggregate, event

DIRECT = "direct"
GROUP = "group"
MAX_PARTICIPANTS = 5000

_T = "courier.conversation:"


class ConversationError(Exception):
    """A change to a conversation that its rules refuse."""


class NotAParticipant(ConversationError):
    pass


class DirectIsFixed(ConversationError):
    """A direct conversation always has exactly its two people."""


class TooManyParticipants(ConversationError):
    pass


def direct_conversation_id(tenant_id: str, user_a: str, user_b: str) -> UUID:
    """Two people share one direct conversation, whoever starts it."""
    first, second = sorted((user_a, user_b))
    return _direct_id(tenant_id, first, second)


@functools.lru_cache(maxsize=65_536)  # asked on every direct send: pairs write again soon
def _direct_id(tenant_id: str, first: str, second: str) -> UUID:
    return uuid5(NAMESPACE_URL, json.dumps(["courier:direct", tenant_id, first, second]))


class Conversation(Aggregate):
    TOPIC = _T + "Conversation"

    class Event(Aggregate.Event):
        meta: dict[str, str]

    class Created(Event, Aggregate.Created):
        TOPIC = _T + "Created"

    class Started(Created):
        TOPIC = _T + "Started"
        tenant_id: str
        kind: str
        participant_ids: list[str]
        title: str | None

    class ParticipantsAdded(Event):
        TOPIC = _T + "ParticipantsAdded"
        user_ids: list[str]

    class ParticipantRemoved(Event):
        TOPIC = _T + "ParticipantRemoved"
        user_id: str

    class LegalHoldPlaced(Event):
        TOPIC = _T + "LegalHoldPlaced"
        reason: str

    class LegalHoldReleased(Event):
        TOPIC = _T + "LegalHoldReleased"
        reason: str

    @staticmethod
    def create_id(tenant_id: str, kind: str, participant_ids: list[str]) -> UUID:
        """Two people share one direct conversation, whoever starts it."""
        people = list(dict.fromkeys(participant_ids))
        if kind == DIRECT and len(people) == 2:
            return direct_conversation_id(tenant_id, people[0], people[1])
        return uuid4()

    @event(Started)
    def __init__(
        self,
        *,
        tenant_id: str,
        kind: str,
        participant_ids: list[str],
        title: str | None,
        meta: dict[str, str],
    ) -> None:
        self.tenant_id = tenant_id
        self.kind = kind
        self.participant_ids = list(dict.fromkeys(participant_ids))
        self.title = title
        self.legal_hold: str | None = None

    def check_participant(self, user_id: str) -> None:
        if user_id not in self.participant_ids:
            raise NotAParticipant(user_id)

    def add_participants(self, user_ids: list[str], meta: dict[str, str]) -> None:
        if self.kind == DIRECT:
            raise DirectIsFixed(str(self.id))
        new = [u for u in dict.fromkeys(user_ids) if u not in self.participant_ids]
        if len(self.participant_ids) + len(new) > MAX_PARTICIPANTS:
            raise TooManyParticipants(str(MAX_PARTICIPANTS))
        if new:
            self._added(user_ids=new, meta=meta)

    @event(ParticipantsAdded)
    def _added(self, user_ids: list[str], meta: dict[str, str]) -> None:
        self.participant_ids = [*self.participant_ids, *user_ids]

    def remove_participant(self, user_id: str, meta: dict[str, str]) -> None:
        if self.kind == DIRECT:
            raise DirectIsFixed(str(self.id))
        self.check_participant(user_id)
        self._removed(user_id=user_id, meta=meta)

    @event(ParticipantRemoved)
    def _removed(self, user_id: str, meta: dict[str, str]) -> None:
        self.participant_ids = [p for p in self.participant_ids if p != user_id]

    # ---- legal hold: retention leaves the conversation's messages alone -------

    @property
    def on_hold(self) -> bool:
        return self.legal_hold is not None

    def place_hold(self, reason: str, meta: dict[str, str]) -> bool:
        """Stop retention from shredding this conversation; False when already held."""
        if self.on_hold:
            return False
        self._hold_placed(reason=reason, meta=meta)
        return True

    @event(LegalHoldPlaced)
    def _hold_placed(self, reason: str, meta: dict[str, str]) -> None:
        self.legal_hold = reason

    def release_hold(self, reason: str, meta: dict[str, str]) -> bool:
        if not self.on_hold:
            return False
        self._hold_released(reason=reason, meta=meta)
        return True

    @event(LegalHoldReleased)
    def _hold_released(self, reason: str, meta: dict[str, str]) -> None:
        self.legal_hold = None
