"""The OpenAPI 3.1 document, made from the endpoint list, the request models
(``interfaces.http.schemas``) and the answer models (``interfaces.http.responses``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic.json_schema import models_json_schema

from application.jobs import QUEUES as QUEUE_NAMES
from interfaces.http.endpoints import Endpoint
from interfaces.http.responses import ANSWERS, REF
from interfaces.http.schemas import MODELS, USER_ID_PATTERN

_PATH_PARAM = re.compile(r"{(\w+)}")
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid"},
    "userId": {"type": "string", "pattern": USER_ID_PATTERN},
    "name": {"type": "string", "enum": list(QUEUE_NAMES)},
    "keyId": {"type": "string", "maxLength": 128},
    "jobId": {"type": "string", "maxLength": 512},
}


def document(endpoints: Sequence[Endpoint], version: str = "0.1.0") -> dict[str, Any]:
    _, defs = models_json_schema(
        [*((m, "validation") for m in MODELS), *((m, "serialization") for m in ANSWERS)],
        by_alias=True,
        ref_template=REF,
    )
    schemas: dict[str, Any] = defs.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Courier",
            "version": version,
            "description": "Event-sourced secure messaging (docs/API.md). Live: WebSocket /ws.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


def _answer(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.response is None:
        return {"description": "success, no content"}
    schema = {"$ref": REF.format(model=endpoint.response.__name__)}
    return {"description": "success", "content": {"application/json": {"schema": schema}}}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    error = {"$ref": REF.format(model="Error")}
    resource = endpoint.handler.__module__.rsplit(".", 1)[-1]
    responses: dict[str, Any] = {
        str(status): _answer(endpoint) for status in (endpoint.status, *endpoint.also)
    }
    responses["default"] = {
        "description": "error",
        "content": {"application/json": {"schema": error}},
    }
    operation: dict[str, Any] = {
        "operationId": f"{resource}_{endpoint.handler.__name__}",
        "summary": endpoint.summary,
        "responses": responses,
    }
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": PATH_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in _PATH_PARAM.findall(endpoint.path)
    ]
    parameters += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema}
        for p in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        schema = {"$ref": REF.format(model=endpoint.body.__name__)}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    if endpoint.auth:
        operation["security"] = [{"bearer": []}]
        operation["x-roles"] = list(endpoint.roles)
        operation["description"] = f"Needs the role {' or '.join(endpoint.roles)}."
    return operation
