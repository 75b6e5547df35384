"""The answers' models and the answers: the JSON bodies built as plain dicts (for
speed, or outside the HTTP layer) are exactly what their models would make, key for key
and in the same order, and the document publishes the models' schemas."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from application.jobs import Job
from application.outgoing import SendResult
from application.ports import NotificationPreferences
from domain.conversation import Conversation
from interfaces.http import responses
from interfaces.http.app import ENDPOINTS
from interfaces.http.openapi import document
from interfaces.http.users import preferences_answer
from interfaces.http.wire import conversation_dict, message_dict, send_answer
from projections.chain import Verdict
from tests.unit.factories import META, TENANT, new_message


def same_body(model: type[BaseModel], body: dict[str, Any]) -> None:
    made = model.model_validate(body).model_dump(mode="json", by_alias=True)
    assert orjson.dumps(made) == orjson.dumps(body)


def conversation() -> Conversation:
    return Conversation(
        tenant_id=TENANT, kind="group", participant_ids=["alice", "bob"], title=None, meta=META
    )


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_send_answer_is_what_its_model_makes(encrypted: bool) -> None:
    message = new_message(["bob", "carol"], encrypted=encrypted)
    jobs = [Job("MESSAGE_DELIVERY", message.id, "deliver", TENANT)]
    same_body(responses.SendAnswer, send_answer(SendResult(message, jobs, created=True)))
    same_body(responses.Message, message_dict(message))


def test_conversations_and_held_ones_are_what_their_models_make() -> None:
    found = conversation()
    same_body(responses.Conversation, conversation_dict(found))
    held = {**conversation_dict(found), "legalHold": "litigation"}
    same_body(responses.HeldConversation, held)


def test_a_chain_verdict_is_what_its_model_makes() -> None:
    fresh = Verdict(ok=True, checked=3, first_bad_position=None, head=3)
    same_body(responses.ChainVerdict, fresh.as_dict())
    signed = Verdict(
        ok=False,
        checked=9,
        first_bad_position=7,
        head=6,
        reason="hash mismatch",
        log_head=9,
        audited_through=6,
        checkpoint={"position": 5, "signedAt": "2030-01-01T00:00:00Z"},
        incremental=True,
    )
    same_body(responses.ChainVerdict, signed.as_dict())


def test_preferences_keep_their_keys_and_order() -> None:
    body = preferences_answer(NotificationPreferences(channels=("email",), email="a@b.example"))
    assert orjson.dumps(body.model_dump(mode="json", by_alias=True)) == (
        b'{"channels":["email"],"email":"a@b.example","phone":null,'
        b'"pushToken":null,"notifyWhenOnline":false}'
    )


def test_the_document_publishes_every_answer_model_by_name() -> None:
    schemas = document(ENDPOINTS)["components"]["schemas"]
    for model in responses.ANSWERS:
        assert model.__name__ in schemas
    message = schemas["Message"]
    assert message["additionalProperties"] is False
    assert set(message["required"]) == set(message["properties"])
    assert {"isEncrypted", "encryptionMetadata", "createdAt"} <= set(message["properties"])
    assert schemas["QueueMetrics"]["properties"]["queues"]["$ref"].endswith("FiguresByQueue")
    assert set(schemas["FiguresByQueue"]["properties"]) == set(responses.QUEUE_NAMES)
