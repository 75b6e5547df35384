"""docs/API.md and the server's /openapi.json describe the same API.

Every operation of the OpenAPI document is in one of API.md's endpoint tables (and no
other), with the same role, success statuses and answer schema, and has a section of its
own naming each of its query parameters and body fields. An endpoint added to the code
without a line in API.md fails here, and so does one documented that the code lacks.
The WebSocket close codes, the queue defaults and the domain events are checked against
the code too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from eventsourcing.domain import Aggregate
from starlette.testclient import TestClient

from application.jobs import DEFAULT_QUEUE_SETTINGS
from domain.access import Access
from domain.conversation import Conversation
from domain.keys import UserKeys
from domain.message import Message
from infrastructure.settings import Settings, load
from interfaces.http import ws
from interfaces.http.app import ENDPOINTS, create_app
from interfaces.http.endpoints import Endpoint, Services
from interfaces.http.openapi import document

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"
TABLE_HEADER = re.compile(r"^\|\s*method\s*\|\s*path\s*\|\s*role\s*\|\s*success\s*\|")
SECTION = re.compile(r"^#### `(GET|POST|PUT|DELETE|PATCH) (/\S*)`\s*$")
HEADING = re.compile(r"^#{1,4} ")
METHODS = ("get", "post", "put", "delete", "patch")
NO_ROLE = "none"
NO_ANSWER = "—"

Operation = tuple[str, str]  # ("POST", "/api/messages/direct")


@dataclass(frozen=True)
class Row:
    """One line of an endpoint table in API.md."""

    role: frozenset[str]
    statuses: frozenset[int]
    answer: str


@dataclass(frozen=True)
class Container:
    """Just enough of a process's container to serve /openapi.json."""

    settings: Settings


def _settings() -> Settings:
    env = {
        "DATABASE_URL": "postgresql://courier@127.0.0.1:5432/unused",
        "JWT_SECRET": "api-doc-test-secret-" + "s" * 40,
        "ENCRYPTION_MASTER_KEYS": "unused-by-these-tests",
    }
    return load(env)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    app = create_app(cast(Services, Container(_settings())))
    with TestClient(app) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


@pytest.fixture(scope="module")
def api_md() -> str:
    return API_MD.read_text(encoding="utf-8")


# ---- reading API.md ------------------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def endpoint_rows(text: str) -> Iterator[tuple[Operation, Row]]:
    """Every row of every table headed ``| method | path | role | success | …``."""
    in_table = False
    for line in text.splitlines():
        if TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if set(cells[0]) <= {"-", ":"}:
            continue  # the separator line
        method, path, role, success = cells[0], cells[1].strip("`"), cells[2], cells[3]
        answer = cells[4] if len(cells) > 4 else ""
        roles = frozenset(r.strip() for r in re.split(r",| or ", role) if r.strip())
        statuses = frozenset(int(s) for s in re.findall(r"\b[1-5]\d\d\b", success))
        yield (method.upper(), path), Row(roles, statuses, answer)


def documented(text: str) -> dict[Operation, Row]:
    rows: dict[Operation, Row] = {}
    for operation, row in endpoint_rows(text):
        assert operation not in rows, f"{operation} is listed twice in docs/API.md"
        rows[operation] = row
    return rows


def sections(text: str) -> dict[Operation, str]:
    """The text under each ``#### `METHOD /path``` heading, up to the next heading."""
    found: dict[Operation, str] = {}
    current: Operation | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "# end"]:
        if HEADING.match(line):
            if current is not None:
                found[current] = "\n".join(lines)
            match = SECTION.match(line)
            current = (match.group(1), match.group(2)) if match else None
            lines = []
        elif current is not None:
            lines.append(line)
    return found


def chapter(text: str, title: str) -> str:
    """The text of the ``## title`` chapter (or ``### title`` part)."""
    level = title.split(" ", 1)[0]
    start = text.index(title + "\n")
    rest = text[start + len(title) :]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)]
    return rest[: ends[0]] if ends else rest


# ---- reading the OpenAPI document ----------------------------------------------------


def operations(doc: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def roles_of(operation: dict[str, Any]) -> frozenset[str]:
    return frozenset(operation.get("x-roles") or [NO_ROLE])


def statuses_of(operation: dict[str, Any]) -> frozenset[int]:
    return frozenset(int(s) for s in operation["responses"] if s.isdigit())


def answer_of(operation: dict[str, Any]) -> str:
    for status in sorted(s for s in operation["responses"] if s.isdigit()):
        content = operation["responses"][status].get("content")
        if content:
            ref: str = content["application/json"]["schema"]["$ref"]
            return ref.rsplit("/", 1)[-1]
    return NO_ANSWER


def body_fields(doc: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    body = operation.get("requestBody")
    if body is None:
        return []
    ref: str = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return list(schema.get("properties", {}))


def undocumented(doc: dict[str, Any], text: str) -> tuple[set[Operation], set[Operation]]:
    """(in the OpenAPI document but not in API.md, in API.md but not in the document)."""
    served, written = set(operations(doc)), set(documented(text))
    return served - written, written - served


# ---- the checks ------------------------------------------------------------------------


def test_every_operation_is_documented_and_nothing_else(
    openapi: dict[str, Any], api_md: str
) -> None:
    missing, extra = undocumented(openapi, api_md)
    assert not missing, f"add these endpoints to docs/API.md's tables: {sorted(missing)}"
    assert not extra, f"docs/API.md lists endpoints the server does not have: {sorted(extra)}"


def test_an_endpoint_added_without_documentation_is_caught(api_md: str) -> None:
    async def handler(request: Any) -> Any:
        raise NotImplementedError

    new = Endpoint("GET", "/api/undocumented", handler, "not in API.md")
    missing, extra = undocumented(document((*ENDPOINTS, new)), api_md)
    assert missing == {("GET", "/api/undocumented")}
    assert not extra


def test_roles_success_statuses_and_answers_match(openapi: dict[str, Any], api_md: str) -> None:
    rows = documented(api_md)
    wrong = []
    for key, operation in operations(openapi).items():
        row = rows.get(key)
        if row is None:
            continue  # reported by the test above
        served = Row(roles_of(operation), statuses_of(operation), answer_of(operation))
        if row != served:
            wrong.append(f"{key}: API.md says {row}, /openapi.json says {served}")
    assert not wrong, "\n".join(wrong)


def test_each_endpoint_has_a_section_naming_its_parameters_and_fields(
    openapi: dict[str, Any], api_md: str
) -> None:
    found = sections(api_md)
    problems = []
    for key, operation in operations(openapi).items():
        text = found.get(key)
        if text is None:
            problems.append(f"{key}: no '#### `{key[0]} {key[1]}`' section")
            continue
        queries = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        for name in [*queries, *body_fields(openapi, operation)]:
            if f"`{name}`" not in text:
                problems.append(f"{key}: `{name}` is not described in its section")
    assert not problems, "\n".join(problems)


def test_every_websocket_close_code_is_documented(api_md: str) -> None:
    table = chapter(api_md, "## 6. WebSocket (`GET /ws`)")
    codes = {v for k, v in vars(ws).items() if k.startswith("CLOSE_") and isinstance(v, int)}
    missing = [code for code in sorted(codes) if f"| {code} |" not in table]
    assert not missing, f"close codes of interfaces/http/ws.py missing from API.md: {missing}"


def test_queue_defaults_are_those_of_the_code(api_md: str) -> None:
    text = chapter(api_md, "## 8. Jobs and queues")
    for q in DEFAULT_QUEUE_SETTINGS.values():
        row = (
            f"| `{q.name}` | {q.concurrency} | {q.max_attempts} | "
            f"{q.backoff}, {q.backoff_seconds:g} | {q.timeout_seconds:g} |"
        )
        assert row in text, f"API.md section 8 should hold the row {row}"


AGGREGATES: tuple[tuple[str, type[Aggregate]], ...] = (
    ("### `Message`", Message),
    ("### `Conversation`", Conversation),
    ("### `UserKeys`", UserKeys),
    ("### `Access`", Access),
)


def stored_events(aggregate: type[Aggregate]) -> list[str]:
    """The names of the aggregate's own event classes (by their stored topic), but those
    that are only bases of others and never stored themselves."""
    prefix = str(getattr(aggregate, "TOPIC", "")).partition(":")[0] + ":"
    events = {
        value: topic
        for value in vars(aggregate).values()
        if isinstance(value, type)
        and issubclass(value, Aggregate.Event)
        and (topic := str(getattr(value, "TOPIC", ""))).startswith(prefix)
    }
    return [
        topic.partition(":")[2]
        for e, topic in events.items()
        if not any(o is not e and issubclass(o, e) for o in events)
    ]


@pytest.mark.parametrize(
    ("title", "aggregate"), AGGREGATES, ids=[a.__name__ for _, a in AGGREGATES]
)
def test_every_domain_event_is_in_the_catalogue(
    api_md: str, title: str, aggregate: type[Aggregate]
) -> None:
    start = api_md.index(title)
    part = chapter(api_md[start:], api_md[start:].splitlines()[0])
    names = stored_events(aggregate)
    assert names, aggregate
    missing = [name for name in names if f"| `{name}` |" not in part]
    assert not missing, f"events of {aggregate.__name__} missing from API.md section 7: {missing}"
