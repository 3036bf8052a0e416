"""The request pipeline: one request to one operation, from the session token and the
capped body to the bound DTO, the handler and the response.

The request DTO is bound from the query string, the JSON body and the path (in rising
priority), case-insensitively (`wire.bind`). A handler gets a `Call[D]` (the request, its
DTO, the services) and answers a response model, a `Reply` for another status,
headers or a cookie, or a Response of its own (a file). An operation that takes bytes
(an attachment's chunk) is given its body as it came, `raw_body_limit` at most, instead
of JSON to bind.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api_shim.services import Services
from api_shim.wire import QueryText, bind, error_response, parse_json_body, respond
from worker.domain import clock, errors
from worker.domain.auth import Caller, SessionKey, find_caller, session_key, touch_session
from worker.domain.errors import ApiError

logger = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")
D = TypeVar("D", bound=BaseModel)
# A body: a response model, or a body passed through as it came (the send job's answer).
B = TypeVar("B", bound=BaseModel | dict[str, Any])

SESSION_HEADER = "x-sm-session-token"
SESSION_COOKIE = "ss-id"
RESERVED_QUERY = frozenset({"format", "callback", "_"})
MAX_BODY_BYTES = 2 * 1024 * 1024  # a 1 MB body in JSON, with room for escaping


@dataclass
class Reply(Generic[B]):
    """An answer other than a plain 200: its status, headers and session cookie."""

    body: B
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    set_cookie: tuple[str, str] | None = None


@dataclass(frozen=True)
class Call(Generic[D]):
    """One request to an operation. An authenticated operation reaches the database only
    through `write`, `read` or `alone_then`, which check rule 1 first: one hop to a
    thread per request (one transaction for `write` and `read`), and nothing happens for
    a bad session."""

    request: Request
    dto: D
    services: Services
    body: bytes | bytearray = b""  # an operation with a raw body: the body as it came

    async def write(self, fn: Callable[[Session, Caller], T]) -> T:
        """`fn(session, caller)` in one read-write transaction that first resolves the
        caller's session (ApiError 811)."""
        return await self._as_caller(fn, write=True)

    async def alone_then(
        self, fn: Callable[[Connection, SessionKey], tuple[Caller, T]], then: Callable[[T], U]
    ) -> U:
        """`fn(connection, session)`, which checks rule 1 in what it writes (ApiError 811
        for a bad session, and nothing written) and answers the caller and a value, with
        each statement committed on its own (`Database.run_alone`); then `then(the
        value)`, all in one hop to a thread. SendMessage finds its caller and records
        its job in one statement on PostgreSQL (`jobs.open_send_job_as`), then publishes
        the job."""
        database = self.services.database

        def run(session: SessionKey, callers: list[Caller]) -> U:
            def alone(connection: Connection) -> T:
                caller, value = fn(connection, session)
                callers.append(caller)
                return value

            return then(database.run_alone(alone))

        return await self._in_thread(run)

    async def read(self, fn: Callable[[Session, Caller], T]) -> T:
        """The same as `write` in a read-only transaction."""
        return await self._as_caller(fn, write=False)

    async def _as_caller(self, fn: Callable[[Session, Caller], T], *, write: bool) -> T:
        database = self.services.database

        def run(session: SessionKey, callers: list[Caller]) -> T:
            def in_transaction(s: Session) -> T:
                caller = find_caller(s.connection(), session)
                callers.append(caller)
                return fn(s, caller)

            return database.run(in_transaction, write=write)

        return await self._in_thread(run)

    async def _in_thread(self, run: Callable[[SessionKey, list[Caller]], U]) -> U:
        """`run(session, callers)` in a thread, which checks rule 1 for `session` and
        appends the caller it finds to `callers`; then the session's idle timer
        restarted when due."""
        now = clock.now()
        session = session_key(
            session_token(self.request),
            now=now,
            idle=self.services.settings.session_idle,
            keys=self.services.keys,
        )
        callers: list[Caller] = []
        try:
            return await run_in_threadpool(run, session, callers)
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


# What a handler answers: the response model (200), a `Reply` for another status,
# headers or a cookie, or a Response of its own.
Handler = Callable[[Call[D]], Awaitable[Reply[Any] | BaseModel | Response]]


def session_token(request: Request) -> str | None:
    """The session token from `x-sm-session-token`, a Bearer header or the `ss-id` cookie."""
    token = request.headers.get(SESSION_HEADER)
    if token:
        return token.strip()
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.cookies.get(SESSION_COOKIE) or None


async def _capped_body(request: Request, limit: int) -> bytearray:
    """The body, refused with 413 past `limit` bytes without reading it all (a declared
    length past it: without reading any)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(errors.TOO_LARGE)
    # One buffer grown in place: the pieces and their join would be the body twice over.
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            raise ApiError(errors.TOO_LARGE)
        body += chunk
    return body


def _query_data(request: Request) -> dict[str, Any]:
    return {
        k: QueryText(v) for k, v in request.query_params.items() if k.lower() not in RESERVED_QUERY
    }


async def run_operation(
    request: Request,
    path_params: Mapping[str, Any],
    *,
    dto_type: type[D],
    handler: Handler[D],
    authenticated: bool,
    raw_body_limit: int | None = None,
) -> Response:
    """Bind the DTO (from the query, a JSON body and the path; or, with `raw_body_limit`,
    from the query and the path, the body handed over as it came), check that a session
    token was given (rule 1 itself is checked by the handler's `Call.write`/`Call.read`),
    run the handler and write its answer; an ApiError on the way is answered as a
    ServiceStack error body."""
    services: Services = request.app.state.services
    try:
        data, body = _query_data(request), bytearray()
        if raw_body_limit is not None:
            body = await _capped_body(request, raw_body_limit)
        elif request.method in ("POST", "PUT", "PATCH", "DELETE"):
            data.update(parse_json_body(await _capped_body(request, MAX_BODY_BYTES)))
        dto = bind(dto_type, {**data, **path_params})
        if authenticated and not session_token(request):
            raise ApiError(errors.SESSION_INVALID)  # before the handler does anything
        answer = await handler(Call(request=request, dto=dto, services=services, body=body))
    except ApiError as error:
        return error_response(request, error)
    if isinstance(answer, Response):
        return answer
    reply = answer if isinstance(answer, Reply) else Reply(body=answer)
    response = respond(request, reply.body, status=reply.status, headers=reply.headers)
    if reply.set_cookie is not None:
        name, value = reply.set_cookie
        response.set_cookie(name, value, httponly=True, samesite="lax", path="/")
    return response
