"""A small ServiceStack-style operation registry on top of FastAPI.

Each operation is declared once (name, custom routes, request DTO, handler, the response
model it answers) and served at `/api/v1/<route>`, `/api/<route>` and the pre-defined
routes `/json/reply/<Name>` and `/api/<Name>`; /openapi.json and the metadata pages
describe it from the same declaration.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api_shim import openapi
from api_shim.pipeline import Handler, run_operation
from api_shim.wire import error_response
from worker.domain import errors
from worker.domain.errors import ApiError, ErrorKind

D = TypeVar("D", bound=BaseModel)

PREFIXES = ("/api/v1", "/api")
# What any request can be answered besides success, whatever its operation.
ANY_REQUEST_ERRORS = (
    errors.VALIDATION,
    errors.SERIALIZATION,
    errors.NOT_ACCEPTABLE,
    errors.TOO_LARGE,
    errors.DATABASE_UNAVAILABLE,
)


@dataclass(frozen=True)
class Operation(Generic[D]):
    name: str
    routes: tuple[tuple[str, str], ...]
    request: type[D]
    handler: Handler[D]
    # An authenticated handler reaches the database through `Call.write`/`Call.read`
    # (rule 1 inside its transaction); the others through `Services`.
    authenticated: bool = True
    summary: str = ""
    # The 200 body (None: an empty object) and the errors this operation can answer.
    response: type[BaseModel] | None = None
    errors: tuple[ErrorKind, ...] = ()
    extra_responses: dict[int, tuple[str, type[BaseModel]]] = field(default_factory=dict)
    # Set for an operation that takes bytes, not JSON (an attachment's chunk): the body
    # is handed to the handler as it came, refused (413) past this many bytes.
    raw_body_limit: int | None = None
    # Set for an operation that answers a file (its handler returns the Response).
    file_answer: bool = False


def error_kinds(op: Operation[Any]) -> tuple[ErrorKind, ...]:
    """Everything the operation can answer besides success: rule 1 first, its own
    errors, then what any request can get."""
    first = (errors.SESSION_INVALID,) if op.authenticated else ()
    return tuple(dict.fromkeys((*first, *op.errors, *ANY_REQUEST_ERRORS)))


async def _run(op: Operation[D], request: Request, path_params: Mapping[str, Any]) -> Response:
    return await run_operation(
        request,
        path_params,
        dto_type=op.request,
        handler=op.handler,
        authenticated=op.authenticated,
        raw_body_limit=op.raw_body_limit,
    )


def _endpoint(op: Operation[Any]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await _run(op, request, request.path_params)

    endpoint.__name__ = op.name
    return endpoint


class _GuidSegment(Convertor[str]):
    """A path segment that can be a GUID (N, D or braced form); its value as it came."""

    regex = "[0-9A-Fa-f{}-]{32,38}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Path parameters that match only what can be a GUID: /attachments/precreate is
# PreCreateAttachments, never DownloadAttachment of a file called "precreate" (the other
# operations keep answering 400 for a malformed GUID in their path).
GUID_ONLY_PARAMETERS = ("attachmentGuid",)


def _router_path(path: str) -> str:
    for name in GUID_ONLY_PARAMETERS:
        path = path.replace("{" + name + "}", "{" + name + ":guid}")
    return path


def register(app: FastAPI, operations: Sequence[Operation[Any]]) -> None:
    """Serve every operation at its custom routes and at the pre-defined routes, and
    describe each in /openapi.json with its request, its answer and its errors."""
    register_url_convertor("guid", _GuidSegment())
    by_name = {op.name.lower(): op for op in operations}
    components: dict[str, Any] = {}
    for op in operations:
        for number, (method, path, prefix) in enumerate(
            (m, p, prefix) for m, p in op.routes for prefix in PREFIXES
        ):
            app.add_api_route(
                prefix + _router_path(path),
                _endpoint(op),
                methods=[method],
                name=f"{op.name}:{prefix}{path}",
                summary=op.summary or op.name,
                tags=[op.name],
                operation_id=op.name if number == 0 else f"{op.name}_{number}",
                responses=openapi.responses(
                    op.response, op.extra_responses, error_kinds(op), file_answer=op.file_answer
                ),
                openapi_extra=openapi.request(
                    op.request,
                    method=method,
                    path=path,
                    authenticated=op.authenticated,
                    components=components,
                    raw_body=op.raw_body_limit is not None,
                ),
                response_class=Response if op.file_answer else JSONResponse,
            )
    openapi.add_components(app, components)

    async def predefined(request: Request) -> Response:
        op = by_name.get(request.path_params["operation"].lower())
        if op is None:
            return error_response(request, ApiError(errors.NOT_FOUND))
        return await _run(op, request, {})

    for route in ("/json/reply/{operation}", "/api/{operation}"):
        app.add_api_route(
            route, predefined, methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False
        )
