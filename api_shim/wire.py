"""ServiceStack's wire conventions (SPEC 2): binding, formats, JSONP and error bodies."""

from __future__ import annotations

import enum
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ValidationError, WithJsonSchema
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api_shim.jsv import MAX_DEPTH, JsvError, nests_deeper_than, parse_complex
from worker.domain import errors
from worker.domain.errors import ApiError, FieldError

JSON_TYPE = "application/json; charset=utf-8"
JSONP_TYPE = "application/javascript; charset=utf-8"
CALLBACK_RE = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$")
OTHER_FORMATS = frozenset({"xml", "csv", "jsv", "html", "jsonl", "protobuf", "msgpack", "wire"})
ACCEPTABLE_TYPES = frozenset(
    {"*/*", "application/*", "application/json", "application/javascript", "text/javascript"}
)
# ServiceStack's page about one operation: HTML for a browser, though its path is under /json/.
METADATA_PAGE = "/json/metadata"

M = TypeVar("M", bound=BaseModel)


# --- values --------------------------------------------------------------------------------


def parse_guid(value: Any) -> Any:
    """A GUID in N (32 hex) or D (dashed) form, any case, as lower-case N form."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value.strip()).hex
        except ValueError:
            raise ValueError("must be a GUID (32 hex digits, with or without dashes)") from None
    return value


def case_insensitive(values: list[str]) -> BeforeValidator:
    """Map any casing of one of `values` to its canonical spelling before validation."""
    by_lower = {v.lower(): v for v in values}

    def convert(value: Any) -> Any:
        if isinstance(value, str):
            return by_lower.get(value.strip().lower(), value)
        return value

    return BeforeValidator(convert)


# ServiceStack's own date form: milliseconds since the epoch (UTC), and optionally the
# sender's UTC offset, which does not change the instant: /Date(1700000000000-0500)/.
WCF_DATE_RE = re.compile(r"^\\?/Date\((-?\d{1,15})([+-]\d{4})?\)\\?/$")


DATE_FORMS = "must be an ISO 8601 date and time, or /Date(milliseconds)/"


def _utc(value: Any) -> Any:
    """ISO 8601 or `/Date(ms)/` / `/Date(ms±hhmm)/` as an aware UTC datetime; an empty
    string as None (no date). A bare number is refused: seconds or milliseconds?"""
    if isinstance(value, int | float):
        raise ValueError(DATE_FORMS)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        wcf = WCF_DATE_RE.match(text)
        try:
            if wcf:
                return datetime.fromtimestamp(int(wcf.group(1)) / 1000, tz=UTC)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError, OSError):
            raise ValueError(DATE_FORMS) from None
    return value


GUID_SCHEMA = r"^(\{)?[0-9A-Fa-f]{8}(-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}(\})?$"
Guid = Annotated[
    str,
    BeforeValidator(parse_guid),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": GUID_SCHEMA,
            "description": "a GUID, N (32 hex) or D (dashed) form",
        }
    ),
]
# A date and time, or None for null or an empty string ("no date").
UtcDatetime = Annotated[
    datetime | None,
    BeforeValidator(_utc),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": WCF_DATE_RE.pattern},
                {"type": "string", "maxLength": 0},
                {"type": "null"},
            ],
            "description": "ISO 8601, or /Date(milliseconds)/ or /Date(ms±hhmm)/ "
            "(ServiceStack's form); an empty string means no date",
        }
    ),
]


def CaseInsensitive(enum_cls: type[enum.Enum]) -> Any:  # noqa: N802 - reads like a type
    return Annotated[enum_cls, case_insensitive([m.value for m in enum_cls])]


# --- binding -------------------------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(_is_list(arg) for arg in get_args(annotation) if arg is not type(None))


class QueryText(str):
    """A value from the query string, where ServiceStack reads objects and lists from
    text (`filter={types:[Inbox]}`, `types=Inbox,Sent`); in a JSON body they must be
    JSON objects and arrays."""

    __slots__ = ()


def _flag(value: Any) -> Any:
    """A boolean is `true` or `false` in JSON; from a query string, its text."""
    if isinstance(value, bool | QueryText):
        return value
    raise ValueError("must be true or false")


# A boolean property: JSON's own, not 0, 1 or "yes" (which a query string may spell).
Flag = Annotated[bool, BeforeValidator(_flag)]


def _complex_value(field_name: str, annotation: Any, value: str) -> Any:
    """A query-string value for an object or list property: JSON or JSV, or for a list
    also comma-separated items (`formats=Text,Html`)."""
    text = value.strip()
    if _is_list(annotation) and not text.startswith("["):
        return [item.strip() for item in text.split(",")] if text else []
    try:
        return parse_complex(text)
    except JsvError as e:
        raise ApiError(
            errors.SERIALIZATION, message=f"Could not read '{pascal((field_name,))}': {e}"
        ) from None


def _rekey(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` keyed by `model`'s field names: names matched case-insensitively, unknown
    properties dropped and a null taken as "not given" (ServiceStack ignores both)."""
    fields = {name.replace("_", "").lower(): name for name in model.model_fields}
    bound: dict[str, Any] = {}
    for key, value in data.items():
        name = fields.get(str(key).replace("_", "").lower())
        if name is None or value is None:
            continue
        annotation = model.model_fields[name].annotation
        nested = _model_in(annotation)
        if isinstance(value, QueryText) and (nested is not None or _is_list(annotation)):
            value = _complex_value(name, annotation, value)
        if nested is not None and isinstance(value, Mapping):
            value = _rekey(nested, value)
        elif nested is not None and isinstance(value, list):
            # A list of objects (PreCreateAttachments' placeholders): each bound the same way.
            value = [_rekey(nested, v) if isinstance(v, Mapping) else v for v in value]
        bound[name] = value
    return bound


def pascal(field_path: tuple[Any, ...]) -> str:
    parts = [str(p) for p in field_path if not isinstance(p, int)]
    return ".".join("".join(w[:1].upper() + w[1:] for w in p.split("_")) for p in parts)


# What PostgreSQL cannot store in a text column: NUL, and UTF-16 surrogates that JSON's
# \ud800 escapes can produce without their pair.
UNSTORABLE_RE = re.compile(r"[\x00\ud800-\udfff]")


def _unstorable_strings(value: Any, path: tuple[Any, ...]) -> list[FieldError]:
    """A field error for every string in `value` (at any depth) that holds a NUL or a lone
    surrogate."""
    found: list[FieldError] = []
    pending: list[tuple[Any, tuple[Any, ...]]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if UNSTORABLE_RE.search(item):
                found.append(
                    FieldError(
                        "InvalidValue",
                        pascal(where),
                        "must not contain NUL characters or unpaired surrogates",
                    )
                )
        elif isinstance(item, Mapping):
            pending.extend((v, (*where, str(k))) for k, v in item.items())
        elif isinstance(item, list):
            pending.extend((v, (*where, i)) for i, v in enumerate(item))
    return found


def bind(model: type[M], data: Mapping[str, Any]) -> M:
    """Validate `data` into `model`, matching property names case-insensitively.

    Raises ApiError ValidationException with one `errors[]` entry per offending field
    (a string holding a NUL or a lone surrogate included), or SerializationException
    for a query-string value that is neither JSON nor JSV.
    """
    bound = _rekey(model, data)
    unstorable = _unstorable_strings(bound, ())
    if unstorable:
        raise errors.validation_error(*sorted(unstorable, key=lambda e: e.field_name))
    try:
        return model.model_validate(bound)
    except ValidationError as e:
        raise errors.validation_error(
            *(
                FieldError(
                    "NotNull" if err["type"] == "missing" else "InvalidValue",
                    pascal(err["loc"]) or model.__name__,
                    str(err["msg"]).removeprefix("Value error, "),
                )
                for err in e.errors(include_url=False, include_input=False)
            )
        ) from None


TOO_DEEP = f"The request body nests deeper than {MAX_DEPTH} levels"


def parse_json_body(raw: bytes | bytearray) -> dict[str, Any]:
    """The request body as a JSON object; no body means {}. Raises SerializationException
    for anything else that is not a JSON object, whitespace alone included, and for JSON
    nested deeper than MAX_DEPTH."""
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(errors.SERIALIZATION) from None
    except RecursionError:
        raise ApiError(errors.SERIALIZATION, message=TOO_DEEP) from None
    if not isinstance(data, dict):
        raise ApiError(errors.SERIALIZATION, message="The request body must be a JSON object")
    # Counting brackets is cheap and rules out deep nesting for almost every body.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nests_deeper_than(data, MAX_DEPTH):
        raise ApiError(errors.SERIALIZATION, message=TOO_DEEP)
    return data


# --- responses -----------------------------------------------------------------------------


def dumps(body: Any) -> bytes:
    """`body` as compact UTF-8 JSON; a response model by its aliases, in field order (the
    same bytes as `json.dumps` of its `model_dump`, written by pydantic's serializer)."""
    if isinstance(body, BaseModel):
        return body.model_dump_json(by_alias=True).encode()
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class BadCallback(Exception):
    """The JSONP callback name is not a plain identifier path."""


def jsonp_callback(request: Request) -> str | None:
    callback = request.query_params.get("callback")
    if callback is None:
        return None
    if not CALLBACK_RE.match(callback):
        raise BadCallback
    return callback


def respond(
    request: Request,
    body: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The body as JSON, or wrapped for JSONP (then always HTTP 200, as ServiceStack does)."""
    try:
        callback = jsonp_callback(request)
    except BadCallback:
        return bad_callback_response()
    if callback is None:
        return Response(dumps(body), status_code=status, media_type=JSON_TYPE, headers=headers)
    wrapped = callback.encode() + b"(" + dumps(body) + b");"
    return Response(wrapped, status_code=200, media_type=JSONP_TYPE, headers=headers)


def bad_callback_response() -> Response:
    body = errors.validation_error(
        FieldError("InvalidValue", "Callback", "Invalid JSONP callback name"),
        message="Invalid JSONP callback name",
    ).response_body()
    return Response(dumps(body), status_code=400, media_type=JSON_TYPE)


def error_response(request: Request, error: ApiError) -> Response:
    return respond(request, error.response_body(), status=error.http_status)


# --- paths and content negotiation ---------------------------------------------------------


def _trusted(peer: str, allowed: str) -> bool:
    hosts = {h.strip() for h in allowed.split(",") if h.strip()}
    return "*" in hosts or peer in hosts


def client_base_url(request: Request, forwarded_allow_ips: str) -> str:
    """The scheme and host the client called, without a trailing slash: the request's
    own, or what `X-Forwarded-Proto` and `X-Forwarded-Host` say when the peer is a
    trusted proxy (FORWARDED_ALLOW_IPS)."""
    base = str(request.base_url).rstrip("/")
    peer = request.client.host if request.client else ""
    if not forwarded_allow_ips or not _trusted(peer, forwarded_allow_ips):
        return base
    scheme, _, rest = base.partition("://")
    host, slash, root = rest.partition("/")
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    forwarded_host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    if proto in ("http", "https"):
        scheme = proto
    if forwarded_host and re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+", forwarded_host):
        host = forwarded_host
    return f"{scheme}://{host}{slash}{root}".rstrip("/")


REPEATED_SLASHES = re.compile(r"//+")


def _fold(path: str) -> str:
    folded = REPEATED_SLASHES.sub("/", path)
    return folded.rstrip("/") or "/"


class FoldSlashes:
    """ASGI middleware: repeated slashes in a path fold into one before routing
    (`/api//login` is `/api/login`: the vendor's PHP SDK joins base URL and route so),
    and a trailing slash is dropped (`/api/v1/jobs/x/` is `/api/v1/jobs/x`, as
    ServiceStack routes it), so that no path is answered with a bodiless redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] == "http" and _fold(path) != path:
            raw_path: bytes = scope.get("raw_path") or path.encode()
            scope = dict(
                scope,
                path=_fold(path),
                raw_path=re.sub(rb"//+", b"/", raw_path).rstrip(b"/") or b"/",
            )
        await self.app(scope, receive, send)


def _accepts_json(accept: str) -> bool:
    if not accept.strip():
        return True
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ACCEPTABLE_TYPES:
            return True
    return False


# DownloadAttachment answers a file whatever `Accept` says (the vendor's SDKs ask for
# application/json).
_FILE_ANSWER = re.compile(r"^/api(?:/v1)?/attachments/[^/]+$")


class ContentNegotiation:
    """ASGI middleware: `.json` suffixes and `?format=json` select JSON (the only format);
    any other format, by suffix, `format` or `Accept`, answers 406. A file download is
    not negotiated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        # /openapi.json, /metrics, … and the HTML metadata page are not ServiceStack replies.
        if (
            not path.startswith(("/api/", "/json/"))
            or path == METADATA_PAGE
            or (scope["method"] == "GET" and _FILE_ANSWER.match(path))
        ):
            await self.app(scope, receive, send)
            return
        last = path.rsplit("/", 1)[-1]
        stem, dot, suffix = last.rpartition(".")
        if dot and stem:
            if suffix.lower() == "json":
                raw_path: bytes = scope.get("raw_path") or path.encode()
                scope = dict(scope, path=path[: -len(".json")], raw_path=raw_path[: -len(".json")])
            elif suffix.lower() in OTHER_FORMATS:
                await self._not_acceptable(scope, receive, send)
                return
        request = Request(scope)
        fmt = request.query_params.get("format")
        accept = request.headers.get("accept", "")
        if (fmt is not None and fmt.lower() != "json") or (
            fmt is None and not _accepts_json(accept)
        ):
            await self._not_acceptable(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _not_acceptable(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = ApiError(errors.NOT_ACCEPTABLE).response_body()
        response = Response(dumps(body), status_code=406, media_type=JSON_TYPE)
        await response(scope, receive, send)
