"""/openapi.json from the operation registry: each route's request (path and query
parameters or a JSON body), its answers (the response model, then the errors by HTTP
status) and its security; the nested request models and the security schemes as
components."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from api_shim.pipeline import SESSION_COOKIE, SESSION_HEADER
from api_shim.responses import EmptyResponse, ErrorResponse
from worker.domain.errors import ErrorKind

SCHEMA_REF = "#/components/schemas/{model}"
SECURITY_SCHEMES = {
    "session": {
        "type": "apiKey",
        "in": "header",
        "name": SESSION_HEADER,
        "description": "the session token from Login",
    },
    "bearer": {"type": "http", "scheme": "bearer"},
    "cookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
}


BINARY = {"type": "string", "format": "binary"}
FILE_ANSWER = {
    "description": "The file's bytes; Content-Disposition names it",
    "content": {"application/octet-stream": {"schema": BINARY}},
}
CHUNK_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"upload": BINARY},
                "required": ["upload"],
            }
        },
        "application/octet-stream": {"schema": BINARY},
    },
}


def responses(
    response: type[BaseModel] | None,
    extra: dict[int, tuple[str, type[BaseModel]]],
    kinds: tuple[ErrorKind, ...],
    *,
    file_answer: bool = False,
) -> dict[int | str, dict[str, Any]]:
    """An operation's answers: 200 with its response model (None: an empty object; with
    `file_answer`, bytes), its `extra` answers (202 for SendMessage), and its error
    `kinds` (`registry.error_kinds`) grouped by HTTP status."""
    by_status: dict[int, list[ErrorKind]] = {}
    for kind in kinds:
        by_status.setdefault(kind.http_status, []).append(kind)
    answers: dict[int | str, dict[str, Any]] = {
        200: (
            FILE_ANSWER
            if file_answer
            else {"model": response or EmptyResponse, "description": "Success"}
        )
    }
    for status, (description, model) in extra.items():
        answers[status] = {"model": model, "description": description}
    for status, kinds_here in sorted(by_status.items()):
        listed = "; ".join(f"{k.code}: {k.message}" for k in kinds_here)
        answers[status] = {"model": ErrorResponse, "description": listed}
    return answers


def _null_means_not_given(schema: dict[str, Any], *, in_body: bool) -> dict[str, Any]:
    """The schema with every optional property also accepting null (SPEC 2: a null is
    "not given"): in the nested models of its `$defs` (JSON wherever they are), and in
    the model itself when it is a JSON body (a query string has no null)."""
    models = schema.get("$defs", {}).values()
    for model in (schema, *models) if in_body else models:
        required = set(model.get("required", []))
        for name, prop in model.get("properties", {}).items():
            alternatives = prop.get("anyOf", [])
            if name in required or {"type": "null"} in alternatives:
                continue
            annotations = {k: prop.pop(k) for k in ("default", "description") if k in prop}
            model["properties"][name] = {
                "anyOf": [dict(prop), {"type": "null"}],
                **annotations,
            }
    return schema


def _query_parameter(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    """An object in a query string is one parameter holding JSON (or JSV, which the
    schema cannot say), as ServiceStack reads it; anything else a plain value."""
    alternatives = prop.get("anyOf", [prop])
    if any("$ref" in a or a.get("type") == "object" for a in alternatives):
        return {
            "name": name,
            "in": "query",
            "required": False,
            "content": {"application/json": {"schema": prop}},
        }
    return {"name": name, "in": "query", "required": False, "schema": prop}


def request(
    model: type[BaseModel],
    *,
    method: str,
    path: str,
    authenticated: bool,
    components: dict[str, Any],
    raw_body: bool = False,
) -> dict[str, Any]:
    """A route's parameters or request body (from its request `model`; with `raw_body`,
    the model's properties are parameters and the body a chunk of bytes), and its
    security; the model's nested models are added to `components`."""
    schema = _null_means_not_given(
        model.model_json_schema(by_alias=True, ref_template=SCHEMA_REF),
        in_body=method != "GET",
    )
    components.update(schema.pop("$defs", {}))
    properties: dict[str, Any] = schema.get("properties", {})
    in_path = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": properties.get(name, {"type": "string"}),
        }
        for name in sorted(in_path)
    ]
    extra: dict[str, Any] = {}
    if method == "GET" or raw_body:
        parameters += [
            _query_parameter(name, prop) for name, prop in properties.items() if name not in in_path
        ]
    if raw_body:
        extra["requestBody"] = CHUNK_BODY
    elif method != "GET":
        body = dict(schema)
        body["properties"] = {k: v for k, v in properties.items() if k not in in_path}
        body["required"] = [r for r in schema.get("required", []) if r not in in_path]
        if not body["required"]:
            body.pop("required")
        extra["requestBody"] = {
            "required": bool(body.get("required")),
            "content": {"application/json": {"schema": body}},
        }
    if authenticated:
        extra["security"] = [{"session": []}, {"bearer": []}, {"cookie": []}]
    if parameters:
        extra["parameters"] = parameters
    return extra


def add_components(app: FastAPI, components: dict[str, Any]) -> None:
    """Add `components` and the security schemes to the app's /openapi.json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            parts = schema.setdefault("components", {})
            parts.setdefault("schemas", {}).update(components)
            parts["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
