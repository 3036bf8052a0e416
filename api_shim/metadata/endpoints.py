"""The routes that serve the metadata pages and the DTO files: the registry is described
once, when the app is built, and each request renders that description."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from api_shim.metadata.csharp import render_csharp
from api_shim.metadata.model import CSHARP_TYPES, INDEX_PAGE, TYPESCRIPT_TYPES, Route, describe
from api_shim.metadata.pages import render_index, render_operation
from api_shim.metadata.typescript import render_typescript
from api_shim.registry import Operation
from api_shim.wire import METADATA_PAGE, error_response
from worker.domain import errors
from worker.domain.errors import ApiError

HTML_TYPE = "text/html; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"


def _predefined_routes(app: FastAPI) -> tuple[Route, ...]:
    """The pre-defined routes `register` added (`/json/reply/{operation}`, …), read from
    the app so that the verbs shown are the ones served."""
    order = ("GET", "POST", "PUT", "DELETE", "PATCH")

    def rank(method: str) -> int:
        return order.index(method) if method in order else len(order)

    return tuple(
        Route(tuple(sorted(route.methods or (), key=rank)), route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and route.path.endswith("/{operation}")
    )


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def register_metadata(app: FastAPI, operations: Sequence[Operation[Any]]) -> None:
    """Serve /metadata, /json/metadata?op=<Name>, /types/typescript and /types/csharp,
    none needing a session. Call it after `registry.register`, whose pre-defined routes
    the pages list.

    Raises ValueError (from `describe`) when the registry cannot be written as DTOs."""
    api = describe(
        operations,
        title=app.title,
        description=app.description,
        predefined=_predefined_routes(app),
    )

    async def index(_: Request) -> Response:
        return Response(render_index(api), media_type=HTML_TYPE)

    async def operation_page(request: Request) -> Response:
        name = request.query_params.get("op")
        if not name:
            return await index(request)
        op = api.operation(name)
        if op is None:
            return error_response(request, ApiError(errors.NOT_FOUND))
        page = render_operation(api, op, host=request.headers.get("host", ""))
        return Response(page, media_type=HTML_TYPE)

    async def typescript(request: Request) -> Response:
        return Response(render_typescript(api, base_url=_base_url(request)), media_type=TEXT_TYPE)

    async def csharp(request: Request) -> Response:
        return Response(render_csharp(api, base_url=_base_url(request)), media_type=TEXT_TYPE)

    for path, endpoint in (
        (INDEX_PAGE, index),
        (METADATA_PAGE, operation_page),
        (TYPESCRIPT_TYPES, typescript),
        (CSHARP_TYPES, csharp),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
