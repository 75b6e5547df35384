"""Requests for every operation of ``/openapi.json``, with the ids one chooses.

The walking tests (tenant isolation, role boundaries) go through the document rather
than a list of their own, so that an endpoint added later is walked too.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

PARAM = re.compile(r"{(\w+)}")


@dataclass(frozen=True)
class Ids:
    """What to put where the document has an id."""

    conversation: str
    message: str
    user: str
    key: str
    job: str
    queue: str = "MESSAGE_INDEXING"
    pem: str = ""


def random_ids(pem: str = "") -> Ids:
    """Ids of nothing at all (a user id and key id nobody has)."""
    return Ids(
        conversation=str(uuid.uuid4()),
        message=str(uuid.uuid4()),
        user="nobody-" + uuid.uuid4().hex[:8],
        key=uuid.uuid4().hex[:16],
        job=f"MESSAGE_INDEXING:{uuid.uuid4()}:index",
        pem=pem,
    )


@dataclass(frozen=True)
class Call:
    method: str
    template: str
    path: str
    roles: tuple[str, ...]
    needs_auth: bool
    json: Any = None
    params: dict[str, str] | None = None

    @property
    def label(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def has_path_id(self) -> bool:
        return bool(PARAM.search(self.template))

    def send(self, http: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        return http.request(
            self.method, self.path, json=self.json, params=self.params, headers=headers
        )


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def calls(document: dict[str, Any], ids: Ids) -> list[Call]:
    """One request per documented operation, its path and body filled from ``ids``."""
    found = []
    for method, template, operation in operations(document):
        path = _fill(template, ids)
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        schema = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
        found.append(
            Call(
                method=method,
                template=template,
                path=path,
                roles=tuple(operation.get("x-roles", ())),
                needs_auth="security" in operation,
                json=_body(schema, ids) if schema else None,
                params=_query(operation, ids),
            )
        )
    return found


def _fill(template: str, ids: Ids) -> str:
    return PARAM.sub(lambda m: _path_value(template, m.group(1), ids), template)


def _path_value(template: str, name: str, ids: Ids) -> str:
    if name == "id":
        return ids.conversation if "/conversations/" in template else ids.message
    values = {"userId": ids.user, "keyId": ids.key, "jobId": ids.job, "name": ids.queue}
    return values[name]


def _body(schema: str, ids: Ids) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "CreateConversation": {"type": "group", "participantIds": [ids.user]},
        "AddParticipants": {"userIds": ["walker-added"]},
        "SendDirect": {"recipientId": ids.user, "content": "walking"},
        "SendGroup": {"conversationId": ids.conversation, "content": "walking"},
        "RegisterKey": {"publicKeyPem": ids.pem},
        "Shred": {"reason": "erasure"},
        "LegalHold": {"reason": "walking"},
        "NotificationPreferences": {"channels": []},
    }
    return bodies[schema]


def _query(operation: dict[str, Any], ids: Ids) -> dict[str, str] | None:
    values = {"q": "hello", "conversationId": ids.conversation, "aggregateId": ids.message}
    params = {
        p["name"]: values[p["name"]]
        for p in operation.get("parameters", [])
        if p["in"] == "query" and p["name"] in values
    }
    return params or None
