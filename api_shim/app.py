"""The FastAPI application (`securesend api`, or `uvicorn --factory api_shim.app:create_app`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from api_shim.dispatch import SendDispatcher
from api_shim.health import register_health
from api_shim.metadata import register_metadata
from api_shim.registry import register
from api_shim.routes import all_operations
from api_shim.services import Services
from api_shim.wire import ContentNegotiation, FoldSlashes, error_response
from worker import telemetry
from worker.db import DATABASE_UNAVAILABLE
from worker.domain import errors
from worker.domain.errors import ApiError
from worker.logging_setup import configure_logging
from worker.runtime import Runtime
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)
# How soon a caller that got 503 should try again: a database restart takes seconds.
RETRY_AFTER_SECONDS = 5


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route serves at this path: the operations sharing a path (GET
    and DELETE /user/authenticationtoken) are routes of their own, and the router's 405
    names only the first one's."""
    allowed: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            allowed |= getattr(route, "methods", None) or set()
    return sorted(allowed)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not logging.getLogger().handlers:  # `--workers N` processes start without ours
        configure_logging(settings)
    # Traces, when the environment asks for them (worker/telemetry.py): before the runtime,
    # whose engines they instrument; flushed by the lifespan.
    traced = telemetry.configure_tracing("securesend-api")
    # The process's runtime: built with the app (uvicorn builds one per process) and
    # closed by the lifespan.
    runtime = Runtime.build(settings)
    if traced:
        telemetry.instrument_engines(runtime.database.engine, runtime.database.read_engine)
    dispatcher = SendDispatcher(celery=runtime.celery, database=runtime.database, settings=settings)
    services = Services(runtime=runtime, dispatcher=dispatcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()
            runtime.close()
            telemetry.flush()

    app = FastAPI(
        title="securesend",
        version="1",
        description="The send side of the Secure Messaging API v8.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    operations = all_operations()
    register(app, operations)
    register_metadata(app, operations)  # after `register`: it lists the pre-defined routes
    register_health(app, services)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = errors.METHOD_NOT_ALLOWED if exc.status_code == 405 else errors.NOT_FOUND
        response = error_response(request, ApiError(kind))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return response

    async def unavailable(request: Request, exc: Exception) -> Response:
        """The database or the broker cannot be reached: 503 with Retry-After, an answer
        on every connection (an error that reached uvicorn closed it)."""
        kind = (
            errors.BROKER_UNAVAILABLE
            if isinstance(exc, RedisError)
            else errors.DATABASE_UNAVAILABLE
        )
        logger.warning(
            "%s on %s %s: %s", kind.message, request.method, request.url.path, type(exc).__name__
        )
        response = error_response(request, ApiError(kind))
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    for outage in (*DATABASE_UNAVAILABLE, RedisError):
        app.add_exception_handler(outage, unavailable)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, ApiError(errors.INTERNAL_ERROR))

    app.add_middleware(ContentNegotiation)
    app.add_middleware(FoldSlashes)  # added last: the outermost, before anything routes
    telemetry.instrument_fastapi(app)  # wraps the whole stack: its span sees every answer
    return app
