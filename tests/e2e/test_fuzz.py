"""Property-based fuzzing of every operation in ``/openapi.json`` against a real server.

Schemathesis generates requests from the document itself, valid ones (with real ids
of the caller's data mixed in, so that they get past "not found") and invalid ones.
Every answer must be no 5xx, conform to the document (status, content type, schema),
and invalid input must be refused with a 4xx. ``COURIER_FUZZ_EXAMPLES`` (default 12
per operation and mode) and ``COURIER_FUZZ_RANDOM=1`` (new examples on every run
instead of the same ones) make a longer or wider hunt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import FAST, services_env
from tests.e2e.harness import Runtime, auth, token, wait_for
from tests.recipient import public_pem

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("COURIER_FUZZ_EXAMPLES", "12"))
DERANDOMIZE = os.environ.get("COURIER_FUZZ_RANDOM") != "1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EVERY_ROLE = ["user", "admin", "auditor"]
FUZZER = "fuzzer"
SERVER_ENV = {
    **FAST,
    # Every index job fails at once, so that the failed-job endpoints have real ids.
    "FAULT_INJECT": "MESSAGE_INDEXING:always",
    "QUEUE_MESSAGE_INDEXING_MAX_ATTEMPTS": "1",
}


@pytest.fixture(params=["embedded", "services"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """Both runtimes: PostgreSQL refuses what SQLite keeps (a NUL in text, for one)."""
    if request.param == "services":
        schema: str = request.getfixturevalue("pg_schema")
        redis_url: str = request.getfixturevalue("redis_url")
        env = {**services_env(schema, redis_url), **SERVER_ENV}
    else:
        env = {**SERVER_ENV, "COURIER_DATA_DIR": str(tmp_path / "var")}
    runtime = Runtime(request.param, env, tmp_path).start()
    yield runtime
    runtime.stop()


def seed(runtime: Runtime) -> dict[str, list[str]]:
    """Real data of the fuzzer's: what path and body ids may be replaced with."""
    http = runtime.http
    me = auth(FUZZER, roles=EVERY_ROLE)
    key_ids = []
    for user in (FUZZER, "bob"):
        response = http.put(
            "/api/keys/me", json={"publicKeyPem": public_pem(user)}, headers=auth(user)
        )
        assert response.status_code == 200, response.text
        key_ids.append(response.json()["keyId"])
    group = http.post(
        "/api/conversations",
        json={"type": "group", "participantIds": ["bob", "carol"], "title": "ward 9"},
        headers=me,
    ).json()["id"]
    plain = http.post(
        "/api/messages/direct", json={"recipientId": "bob", "content": "hello"}, headers=me
    ).json()["message"]["id"]
    sealed = http.post(
        "/api/messages/direct",
        json={"recipientId": "bob", "content": "secret", "encrypted": True},
        headers=me,
    ).json()["message"]["id"]
    http.post("/api/messages/group", json={"conversationId": group, "content": "hi"}, headers=me)

    def failed_jobs() -> list[str]:
        page = http.get("/api/messages/queue/MESSAGE_INDEXING/failed", headers=me).json()
        return [item["jobId"] for item in page["items"]]

    jobs = wait_for(failed_jobs, 30, "a failed indexing job")
    wait_for(
        lambda: runtime.message(FUZZER, sealed)["status"] in ("delivered", "failed"),
        30,
        "the encrypted message to be sealed and delivered",
    )
    return {
        "id": [group, plain, sealed],
        "conversationId": [group],
        "userId": [FUZZER, "bob"],
        "recipientId": ["bob"],
        "keyId": key_ids,
        "jobId": jobs,
        "name": ["MESSAGE_INDEXING"],
    }


def with_real_ids(case: Any, data: st.DataObject, real: dict[str, list[str]]) -> None:
    """Swap some generated ids for real ones (a valid case stays valid: real ids fit)."""
    for name in list(case.path_parameters or {}):
        if name in real and data.draw(st.booleans(), label=f"real {name}"):
            case.path_parameters[name] = data.draw(st.sampled_from(real[name]), label=name)
    if isinstance(case.body, dict):
        for name in ("conversationId", "recipientId"):
            if name in case.body and data.draw(st.booleans(), label=f"real {name}"):
                case.body[name] = data.draw(st.sampled_from(real[name]), label=name)


def fuzz(
    runtime: Runtime, operation: Any, mode: GenerationMode, real: dict[str, list[str]]
) -> list[str]:
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        if mode is GenerationMode.POSITIVE:
            with_real_ids(case, data, real)
        try:
            response = case.call(base_url=runtime.base_url, timeout=30)
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as failure:
            failures.append(f"{operation.label} ({mode.value}): {failure}"[:3000])

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters, no body
    return failures


def test_every_operation_holds_under_fuzzing(target: Runtime) -> None:
    real = seed(target)
    schema = schemathesis.openapi.from_url(target.base_url + "/openapi.json")
    bearer = token(FUZZER, roles=EVERY_ROLE)

    @schema.auth()
    class Bearer:
        def get(self, case: Any, context: Any) -> str:
            return bearer

        def set(self, case: Any, data: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    operations = [result.ok() for result in schema.get_all_operations()]
    documented = target.http.get("/openapi.json").json()["paths"]
    fuzzed = {(op.method.lower(), op.path) for op in operations}
    assert fuzzed == {(m, p) for p, ops in documented.items() for m in ops} - {
        ("get", "/openapi.json")  # schemathesis leaves out the document itself
    }
    started = time.monotonic()
    failures = [
        failure
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for failure in fuzz(target, operation, mode, real)
    ]
    elapsed = time.monotonic() - started
    assert not failures, f"{len(failures)} failures in {elapsed:.0f} s:\n\n" + "\n\n".join(
        failures[:10]
    )
    logs = target.logs()
    for sign in ("Traceback", "Exception in ASGI application", "unhandled error"):
        assert sign not in logs, logs[-6000:]
