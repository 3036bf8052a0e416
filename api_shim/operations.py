"""A small ServiceStack-style operation registry on top of FastAPI.

Each operation is declared once (name, custom routes, request DTO, handler) and served at
`/api/v1/<route>`, `/api/<route>` and the pre-defined routes `/json/reply/<Name>` and
`/api/<Name>`. The request DTO is bound from the query string, the JSON body and the path
(in rising priority), case-insensitively.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from api_shim.responses import EmptyResponse, ErrorResponse
from api_shim.services import Services
from api_shim.wire import QueryText, bind, error_response, parse_json_body, respond
from worker.domain import clock, errors
from worker.domain.auth import Caller, resolve_session, touch_session
from worker.domain.errors import ApiError, ErrorKind

logger = logging.getLogger(__name__)
T = TypeVar("T")

PREFIXES = ("/api/v1", "/api")
SESSION_HEADER = "x-sm-session-token"
SESSION_COOKIE = "ss-id"
RESERVED_QUERY = frozenset({"format", "callback", "_"})
MAX_BODY_BYTES = 2 * 1024 * 1024  # a 1 MB body in JSON, with room for escaping


@dataclass
class Reply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    set_cookie: tuple[str, str] | None = None


@dataclass(frozen=True)
class Call:
    """One request to an operation. An authenticated operation reaches the database only
    through `write` or `read`, which check rule 1 inside the same transaction: one
    transaction (and one hop to a thread) per request, and nothing happens for a bad
    session."""

    request: Request
    dto: Any
    services: Services

    async def write(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """`fn(session, caller=<the caller>, **kwargs)` in one read-write transaction that
        first resolves the caller's session (ApiError 811)."""
        return await self._as_caller(fn, kwargs, write=True)

    async def read(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """The same in a read-only transaction."""
        return await self._as_caller(fn, kwargs, write=False)

    async def _as_caller(self, fn: Callable[..., T], kwargs: dict[str, Any], *, write: bool) -> T:
        token = session_token(self.request)
        idle = self.services.settings.session_idle
        now = clock.now()
        callers: list[Caller] = []

        def as_caller(session: Session) -> T:
            caller = resolve_session(
                session, token=token, now=now, idle=idle, keys=self.services.keys
            )
            callers.append(caller)
            return fn(session, caller=caller, **kwargs)

        run = self.services.write if write else self.services.read
        try:
            return await run(as_caller)
        finally:
            if callers and callers[-1].touch_due:
                await self._touch(callers[-1], now)

    async def _touch(self, caller: Caller, now: datetime) -> None:
        """Restart the session's idle timer, in a write of its own: at most once a minute
        per session, kept whether or not the operation succeeded."""
        try:
            await self.services.write(touch_session, session_id=caller.session_id, now=now)
        except Exception:  # noqa: BLE001 - the answer stands; the next request tries again
            logger.warning("could not refresh session %s", caller.session_id, exc_info=True)


Handler = Callable[[Call], Awaitable[Reply | dict[str, Any]]]


@dataclass(frozen=True)
class Operation:
    name: str
    routes: tuple[tuple[str, str], ...]
    request: type[BaseModel]
    handler: Handler
    # An authenticated handler reaches the database through `Call.write`/`Call.read`
    # (rule 1 inside its transaction); the others through `Services`.
    authenticated: bool = True
    summary: str = ""
    # For /openapi.json: the 200 body and the errors this operation can answer.
    response: type[BaseModel] | None = None
    errors: tuple[ErrorKind, ...] = ()
    extra_responses: dict[int, tuple[str, type[BaseModel]]] = field(default_factory=dict)


def session_token(request: Request) -> str | None:
    """The session token from `x-sm-session-token`, a Bearer header or the `ss-id` cookie."""
    token = request.headers.get(SESSION_HEADER)
    if token:
        return token.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE) or None


async def _capped_body(request: Request) -> bytes:
    """The body, refused with 413 past MAX_BODY_BYTES without reading it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(errors.TOO_LARGE)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(errors.TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


async def _request_data(request: Request, path_params: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: QueryText(v) for k, v in request.query_params.items() if k.lower() not in RESERVED_QUERY
    }
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        data.update(parse_json_body(await _capped_body(request)))
    data.update(path_params)
    return data


async def run_operation(
    op: Operation, request: Request, path_params: Mapping[str, Any]
) -> Response:
    services: Services = request.app.state.services
    try:
        dto = bind(op.request, await _request_data(request, path_params))
        if op.authenticated and not session_token(request):
            raise ApiError(errors.SESSION_INVALID)  # before the handler does anything
        reply = await op.handler(Call(request=request, dto=dto, services=services))
    except ApiError as error:
        return error_response(request, error)
    if not isinstance(reply, Reply):
        reply = Reply(body=reply)
    response = respond(request, reply.body, status=reply.status, headers=reply.headers)
    if reply.set_cookie is not None:
        name, value = reply.set_cookie
        response.set_cookie(name, value, httponly=True, samesite="lax", path="/")
    return response


def _endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await run_operation(op, request, request.path_params)

    endpoint.__name__ = op.name
    return endpoint


def register(app: FastAPI, operations: list[Operation]) -> None:
    """Serve every operation at its custom routes and at the pre-defined routes, and
    describe each in /openapi.json with its request, its answer and its errors."""
    by_name = {op.name.lower(): op for op in operations}
    components: dict[str, Any] = {}
    for op in operations:
        for number, (method, path, prefix) in enumerate(
            (m, p, prefix) for m, p in op.routes for prefix in PREFIXES
        ):
            app.add_api_route(
                prefix + path,
                _endpoint(op),
                methods=[method],
                name=f"{op.name}:{prefix}{path}",
                summary=op.summary or op.name,
                tags=[op.name],
                operation_id=op.name if number == 0 else f"{op.name}_{number}",
                responses=openapi_responses(op),
                openapi_extra=openapi_request(op, method, path, components),
            )
    _merge_components(app, components)

    async def predefined(request: Request) -> Response:
        op = by_name.get(request.path_params["operation"].lower())
        if op is None:
            return error_response(request, ApiError(errors.NOT_FOUND))
        return await run_operation(op, request, {})

    for route in ("/json/reply/{operation}", "/api/{operation}"):
        app.add_api_route(
            route, predefined, methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
        )


ANY_REQUEST_ERRORS = (
    errors.VALIDATION,
    errors.SERIALIZATION,
    errors.NOT_ACCEPTABLE,
    errors.TOO_LARGE,
    errors.DATABASE_UNAVAILABLE,
)
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


def error_kinds(op: Operation) -> tuple[ErrorKind, ...]:
    """Everything the operation can answer besides success: rule 1 first, its own
    errors, then what any request can get."""
    first = (errors.SESSION_INVALID,) if op.authenticated else ()
    return tuple(dict.fromkeys((*first, *op.errors, *ANY_REQUEST_ERRORS)))


def openapi_responses(op: Operation) -> dict[int | str, dict[str, Any]]:
    by_status: dict[int, list[ErrorKind]] = {}
    for kind in error_kinds(op):
        by_status.setdefault(kind.http_status, []).append(kind)
    responses: dict[int | str, dict[str, Any]] = {
        200: {"model": op.response or EmptyResponse, "description": "Success"}
    }
    for status, (description, model) in op.extra_responses.items():
        responses[status] = {"model": model, "description": description}
    for status, kinds_here in sorted(by_status.items()):
        listed = "; ".join(f"{k.code}: {k.message}" for k in kinds_here)
        responses[status] = {"model": ErrorResponse, "description": listed}
    return responses


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


def openapi_request(
    op: Operation, method: str, path: str, components: dict[str, Any]
) -> dict[str, Any]:
    schema = _null_means_not_given(
        op.request.model_json_schema(by_alias=True, ref_template=SCHEMA_REF),
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
    if method == "GET":
        parameters += [
            _query_parameter(name, prop) for name, prop in properties.items() if name not in in_path
        ]
    else:
        body = dict(schema)
        body["properties"] = {k: v for k, v in properties.items() if k not in in_path}
        body["required"] = [r for r in schema.get("required", []) if r not in in_path]
        if not body["required"]:
            body.pop("required")
        extra["requestBody"] = {
            "required": bool(body.get("required")),
            "content": {"application/json": {"schema": body}},
        }
    if op.authenticated:
        extra["security"] = [{"session": []}, {"bearer": []}, {"cookie": []}]
    if parameters:
        extra["parameters"] = parameters
    return extra


def _merge_components(app: FastAPI, components: dict[str, Any]) -> None:
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
