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
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api_shim.services import Services
from api_shim.wire import bind, error_response, parse_json_body, respond
from worker.domain import clock, errors
from worker.domain.auth import Caller, resolve_session
from worker.domain.errors import ApiError

logger = logging.getLogger(__name__)

PREFIXES = ("/api/v1", "/api")
SESSION_HEADER = "x-sm-session-token"
SESSION_COOKIE = "ss-id"
RESERVED_QUERY = frozenset({"format", "callback", "_"})


@dataclass
class Reply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    set_cookie: tuple[str, str] | None = None


@dataclass(frozen=True)
class Call:
    request: Request
    dto: Any
    caller: Caller | None
    services: Services

    @property
    def user(self) -> Caller:
        assert self.caller is not None, "operation declared authenticated=False"
        return self.caller


Handler = Callable[[Call], Awaitable[Reply | dict[str, Any]]]


@dataclass(frozen=True)
class Operation:
    name: str
    routes: tuple[tuple[str, str], ...]
    request: type[BaseModel]
    handler: Handler
    authenticated: bool = True
    # The handler resolves the session itself, inside its first transaction (SendMessage:
    # rule 1 and the job row in one round trip). It must call `resolve_caller`.
    session_in_handler: bool = False
    summary: str = ""


def session_token(request: Request) -> str | None:
    """The session token from `x-sm-session-token`, a Bearer header or the `ss-id` cookie."""
    token = request.headers.get(SESSION_HEADER)
    if token:
        return token.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE) or None


def resolve_caller(session: Session, services: Services, request: Request) -> Caller:
    """Rule 1 inside the caller's transaction: the caller, or ApiError 811."""
    return resolve_session(
        session, token=session_token(request), now=clock.now(), idle=services.settings.session_idle
    )


def _authenticate(services: Services, request: Request) -> Caller:
    with services.database.write_session() as session:
        return resolve_caller(session, services, request)


async def authenticate(services: Services, request: Request) -> Caller:
    """Rule 1: the caller behind the request's session, or ApiError 811."""
    if not session_token(request):
        raise ApiError(errors.SESSION_INVALID)
    return await run_in_threadpool(_authenticate, services, request)


async def _request_data(request: Request, path_params: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: v for k, v in request.query_params.items() if k.lower() not in RESERVED_QUERY
    }
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        raw = await request.body()
        data.update(parse_json_body(raw))
    data.update(path_params)
    return data


async def run_operation(
    op: Operation, request: Request, path_params: Mapping[str, Any]
) -> Response:
    services: Services = request.app.state.services
    try:
        dto = bind(op.request, await _request_data(request, path_params))
        needs_session = op.authenticated and not op.session_in_handler
        caller = await authenticate(services, request) if needs_session else None
        reply = await op.handler(Call(request=request, dto=dto, caller=caller, services=services))
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
    """Serve every operation at its custom routes and at the pre-defined routes."""
    by_name = {op.name.lower(): op for op in operations}
    for op in operations:
        for method, path in op.routes:
            for prefix in PREFIXES:
                app.add_api_route(
                    prefix + path,
                    _endpoint(op),
                    methods=[method],
                    name=f"{op.name}:{prefix}{path}",
                    summary=op.summary or op.name,
                    tags=[op.name],
                )

    async def predefined(request: Request) -> Response:
        op = by_name.get(request.path_params["operation"].lower())
        if op is None:
            return error_response(request, ApiError(errors.NOT_FOUND))
        return await run_operation(op, request, {})

    for route in ("/json/reply/{operation}", "/api/{operation}"):
        app.add_api_route(
            route, predefined, methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
        )
